//! Training: the loop, the optimiser with saveable state, LR schedules, guard rails, and
//! atomic run checkpoints.
