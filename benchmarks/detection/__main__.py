"""Run the detection battery and print per-rule scores, then one summary line.

The last line reads exactly::

    detection: dispatch <r>% on time, <f> false per 20 storms; leak <r>%, <f> false per
    30 home-months; watch <r>%, <f> false per 30 watched home-months (<N> scenarios)

(one line). Definitions: docs/detection.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from benchmarks.detection import households, storms
from benchmarks.detection.common import (
    HELD_OUT_SEED,
    TUNING_SEED,
    add_seed_options,
    base_seed,
    storm_seeds,
)


def summary_line(storm: dict[str, float], house: dict[str, float], n: int) -> str:
    return (
        f"detection: dispatch {storm['dispatch_on_time_pct']:.0f}% on time, "
        f"{storm['dispatch_false_per_20']:.1f} false per 20 storms; "
        f"leak {house['leak_recall_pct']:.0f}%, "
        f"{house['leak_false_per_30']:.1f} false per 30 home-months; "
        f"watch {house['watch_recall_pct']:.0f}%, "
        f"{house['watch_false_per_30']:.1f} false per 30 watched home-months "
        f"({n} scenarios)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_seed_options(parser)
    args = parser.parse_args(argv)
    base = base_seed(args)
    label = "tuning" if base == TUNING_SEED else "held-out" if base == HELD_OUT_SEED else "custom"
    print(f"detection battery: base seed {base} ({label}), {'quick' if args.quick else 'full'}")
    seeds = storm_seeds(args)
    if len(seeds) > 1:
        print(f"storms on the held-out base seeds {', '.join(str(s) for s in seeds)}")
    t0 = time.monotonic()
    storm = storms.run(seeds, quick=args.quick)
    for line in storm.lines + storm.notes:
        print(line)
    house = households.run(base, quick=args.quick)
    for line in house.lines + house.notes:
        print(line)
    print(f"elapsed {time.monotonic() - t0:.0f} s")
    print(summary_line(storm.summary, house.summary, storm.scenarios + house.scenarios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
