#!/usr/bin/env python3
"""Write the demo's EventBridge events: the samples from events/ with the seeded ids put in.

  events.py --events-dir events --seed world.json --out DIR

Writes, in DIR, one file per event the demo delivers to `onboard-eni` (the order is the file
name's), plus scheduled.json for the two scheduled functions, and prints the list as JSON:
[{"file": ..., "function": ..., "what": ...}].
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys


def load(events_dir: str, name: str) -> dict:
    path = os.path.join(events_dir, name)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"events: {path} is missing (the sample events come with the control plane)")


def arn(region: str, account: str, kind: str, rid: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:{kind}/{rid}"


def instance_running(sample: dict, world: dict, res: dict) -> dict:
    e = copy.deepcopy(sample)
    e["region"] = world["region"]
    e["resources"] = [arn(world["region"], e["account"], "instance", res["instance_id"])]
    e["detail"]["instance-id"] = res["instance_id"]
    e["detail"]["state"] = "running"
    return e


def create_network_interface(sample: dict, world: dict, res: dict) -> dict:
    e = copy.deepcopy(sample)
    e["region"] = world["region"]
    d = e["detail"]
    d["awsRegion"] = world["region"]
    d["requestParameters"]["subnetId"] = res["subnet_id"]
    ni = d["responseElements"]["networkInterface"]
    ni["networkInterfaceId"] = res["eni_id"]
    ni["subnetId"] = res["subnet_id"]
    ni["vpcId"] = world["vpc_id"]
    ni["privateIpAddress"] = res["ip"]
    return e


def tag_change_instance(sample: dict, world: dict, res: dict) -> dict:
    e = copy.deepcopy(sample)
    e["region"] = world["region"]
    e["resources"] = [arn(world["region"], e["account"], "instance", res["instance_id"])]
    e["detail"]["tags"] = dict(res["tags"])
    e["detail"]["changed-tag-keys"] = sorted(res["tags"])
    return e


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events-dir", required=True)
    p.add_argument("--seed", required=True, help="the JSON printed by seed.py seed")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    world = json.load(open(args.seed))
    r = world["by_name"]
    os.makedirs(args.out, exist_ok=True)

    running = load(args.events_dir, "instance-running.json")
    created = load(args.events_dir, "cloudtrail-create-network-interface.json")
    tagged = load(args.events_dir, "tag-change-instance.json")
    scheduled = load(args.events_dir, "scheduled.json")
    plan = [
        ("01-web-1-running.json", "onboard-eni", "web-1 starts (instance running)", instance_running(running, world, r["web-1"])),
        (
            "02-api-eni-created.json",
            "onboard-eni",
            "api-eni created (CloudTrail CreateNetworkInterface)",
            create_network_interface(created, world, r["api-eni"]),
        ),
        ("03-web-3-tagged.json", "onboard-eni", "web-3 tagged, but it carries the exclude tag", tag_change_instance(tagged, world, r["web-3"])),
        ("04-web-1-running-again.json", "onboard-eni", "the web-1 event delivered again", instance_running(running, world, r["web-1"])),
        ("scheduled.json", "reconcile-mirrors size-fleet", "the schedule", scheduled),
    ]
    out = []
    for name, function, what, event in plan:
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(event, f, indent=2)
        out.append({"file": os.path.join(args.out, name), "function": function, "what": what})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
