"""Print the scalars of a TensorBoard event file as JSON, read by TensorBoard's own
EventAccumulator (used by tests/plot_metrics.rs to check `cpt`'s event writer).

Usage: python3 scripts/read_tb_events.py EVENT_FILE
Prints {"tag": [[step, value], ...], ...}.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(path):
    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
