# %% tags=["parameters"]
upstream = ["get"]
product = None

# %%
import csv
import json
from collections import defaultdict
from pathlib import Path

totals = defaultdict(float)
with open(upstream["get"]["data"]) as f:
    for row in csv.DictReader(f):
        totals[row["region"]] += float(row["amount"])

summary = {region: round(total, 2) for region, total in sorted(totals.items())}
Path(product["summary"]).write_text(json.dumps(summary, indent=2))
print("sales by region:", summary)
