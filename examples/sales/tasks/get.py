# %% tags=["parameters"]
upstream = None
product = None
sample = None

# %%
import csv
import random
from pathlib import Path

# the same data on every run: a pipeline at a commit should reproduce its outputs
rng = random.Random(42)
n = 100 if sample else 10_000
regions = ["north", "south", "east", "west"]

Path(product["data"]).parent.mkdir(parents=True, exist_ok=True)
with open(product["data"], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["order", "region", "amount"])
    for i in range(n):
        writer.writerow([i, rng.choice(regions), round(rng.uniform(5, 500), 2)])

print(f"wrote {n} orders (sample={sample})")
