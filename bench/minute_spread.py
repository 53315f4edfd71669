"""How evenly crc32(minion id) % 60 spreads a fleet over the hour.

Prints a Markdown table (used in docs/SCHEDULE.md): for fleets of 10, 100
and 1,000 ids in three naming styles, the most servers that share one
minute, the ideal (ceil(n/60)), and how many minutes stay empty. A random
assignment is shown for comparison (the mean of 1,000 trials).
"""

import math
import random
import statistics

import snap_core

SLOTS = 60
SIZES = (10, 100, 1000)


def styles(n):
    rng = random.Random(n)
    words = ["web", "db", "app", "cache", "mq", "lb", "api", "worker", "mail", "git"]
    return {
        "sequential (`web1`..`webN`)": [f"web{i}" for i in range(1, n + 1)],
        "fqdn (`app-0042.dc1.example.com`)": [f"{words[i % 10]}-{i:04d}.dc{i % 3 + 1}.example.com" for i in range(n)],
        "random 12-char hostnames": ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12)) for _ in range(n)],
    }


def random_max(n, trials=1000):
    rng = random.Random(7)
    maxes = []
    for _ in range(trials):
        counts = [0] * SLOTS
        for _ in range(n):
            counts[rng.randrange(SLOTS)] += 1
        maxes.append(max(counts))
    return statistics.mean(maxes)


def main():
    print("| fleet | ids | max in one minute | ideal | empty minutes | random assignment (mean max) |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in SIZES:
        rnd = random_max(n)
        for name, ids in styles(n).items():
            most, ideal, empty = snap_core.minute_spread(ids, SLOTS)
            assert ideal == math.ceil(n / SLOTS)
            print(f"| {n} | {name} | {most} | {ideal} | {empty} | {rnd:.1f} |")


if __name__ == "__main__":
    main()
