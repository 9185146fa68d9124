//! Weights shared by training threads without locks (Hogwild!, Recht et al. 2011), as
//! fastText trains: each thread reads and updates rows in place; two threads touching the
//! same row at once may lose part of one update, which sparse SGD tolerates. With one
//! thread nothing overlaps and training is deterministic.
use std::cell::UnsafeCell;

pub struct HogwildMatrix {
    cells: Box<[UnsafeCell<f32>]>,
    cols: usize,
}

// SAFETY: concurrent unsynchronised access to the f32 cells is the point of Hogwild (see the
// module comment); a torn or lost f32 update is tolerated by the algorithm, and f32 has no
// invalid bit patterns, so no thread can observe an invalid value. The matrix never changes
// size while shared.
unsafe impl Sync for HogwildMatrix {}

impl HogwildMatrix {
    pub fn new(values: Vec<f32>, cols: usize) -> Self {
        debug_assert!(cols > 0 && values.len() % cols == 0);
        // Collected in place: UnsafeCell<f32> has the layout of f32.
        let cells = values.into_iter().map(UnsafeCell::new).collect::<Vec<_>>().into_boxed_slice();
        HogwildMatrix { cells, cols }
    }

    /// Row `r` to read.
    ///
    /// # Safety
    /// Other threads may write the row meanwhile (Hogwild); callers only read plain f32s
    /// from it and never keep the slice beyond one vector operation.
    #[inline]
    pub unsafe fn row(&self, r: usize) -> &[f32] {
        let start = r * self.cols;
        assert!(start + self.cols <= self.cells.len(), "row {r} out of range");
        std::slice::from_raw_parts(self.cells[start].get(), self.cols)
    }

    /// Row `r` to update in place.
    ///
    /// # Safety
    /// As `row`: the slice lives for one vector operation, and lost updates are accepted.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn row_mut(&self, r: usize) -> &mut [f32] {
        let start = r * self.cols;
        assert!(start + self.cols <= self.cells.len(), "row {r} out of range");
        std::slice::from_raw_parts_mut(self.cells[start].get(), self.cols)
    }

    /// The values, once no thread shares the matrix any more.
    pub fn into_values(self) -> Vec<f32> {
        self.cells.into_vec().into_iter().map(UnsafeCell::into_inner).collect()
    }
}
