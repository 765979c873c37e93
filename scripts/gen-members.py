#!/usr/bin/env python3
"""Write a synthetic member file: member_id,name,phone,constituency,membership.

Numbers come only from Ofcom's drama ranges (data/ofcom-drama-numbers.md), so no real
person can be reached; with 20,000 such numbers, files larger than that necessarily
share numbers between members. Deterministic for a given --seed.

    scripts/gen-members.py --rows 1000000 > members.csv
"""
import argparse
import csv
import random
import sys
from pathlib import Path

DRAMA_PREFIXES = [
    "0113 496 0", "0114 496 0", "0115 496 0", "0116 496 0", "0117 496 0", "0118 496 0",
    "0121 496 0", "0131 496 0", "0141 496 0", "0151 496 0", "0161 496 0", "020 7946 0",
    "0191 498 0", "028 9649 6", "029 2018 0", "01632 960", "07700 900", "08081 570",
    "0909 879 0", "03069 990",
]
FIRST = "Alex Sam Kim Jo Pat Lee Ray Max Ann Bob Cat Dee Eve Fay Gus Hal Ivy Jan Kit Liz".split()
LAST = "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Wright Walker Evans Khan".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seats_file = Path(__file__).resolve().parent.parent / "data" / "uk-constituencies-2024.csv"
    with seats_file.open(encoding="utf-8") as f:
        seats = [row["code"] for row in csv.DictReader(f)]
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["member_id", "name", "phone", "constituency", "membership"])
    for i in range(args.rows):
        prefix = DRAMA_PREFIXES[i % len(DRAMA_PREFIXES)]
        number = (i // len(DRAMA_PREFIXES)) % 1000
        out.writerow([
            f"M{i:07d}",
            f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            f"{prefix}{number:03d}",
            rng.choice(seats),
            "full" if rng.random() < 0.7 else "supporter",
        ])


if __name__ == "__main__":
    main()
