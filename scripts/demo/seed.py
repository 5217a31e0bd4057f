#!/usr/bin/env python3
"""Seed a moto server with the mirrorfleet demo VPC, and read back what the control plane did.

Used by `make demo` (scripts/demo.sh) and by the system tests (tests/), so both tell the same
story. Talks to moto only (``--endpoint http://127.0.0.1:PORT``) with dummy credentials.

Sub-commands (each prints JSON on stdout unless said otherwise):

  seed      create the demo VPC and print the ids, plus the ENIs the control plane is
            expected to mirror and those it must leave alone
  sessions  list every traffic mirror session with its tags
  asg       the rebuilder ASG's min/max/desired capacity
  untag     remove a tag from an instance and its ENIs (drift for a reconcile run)
  report    a readable table of sessions and the fleet size (text, for humans)
  verify    check the sessions (and the desired capacity) against the expectation; exit 1
            on any difference

The seeded world (one VPC 10.0.0.0/16, two subnets):

  instance  web-1     tag mirror=true                         -> mirrored (instance filter)
  instance  web-2     tag mirror=true                         -> mirrored (instance filter)
  instance  web-3     tag mirror=true + exclude tag           -> NOT mirrored (exclusion)
  instance  batch-1   untagged                                -> NOT mirrored
  ENI       api-eni   tag mirror=true, secondary ENI of batch-1 -> mirrored (ENI filter)
  ENI       spare-eni untagged, unattached                    -> NOT mirrored
  rebuilder-1 the ASG's instance, tag mirror=true (propagated by the ASG) -> NOT mirrored (our fleet)
  batch-1's primary ENI carries a session WITHOUT our owner tag (someone else's): it must be
  left untouched.
  NLB with a UDP/4789 listener -> mirror target; a mirror filter; the rebuilder ASG (launch
  template, min 1, max 4, desired 1, tag mirror=true propagated at launch) whose instances
  must never be mirrored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import boto3
from botocore.config import Config

MIRROR_TAG = ("mirror", "true")
DEFAULT_EXCLUDE_TAG = "mirrorfleet:exclude"
OWNER_TAG_KEY = "mirrorfleet:owner"


def clients(endpoint: str, region: str):
    kw = dict(
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="mirrorfleet-demo",
        aws_secret_access_key="mirrorfleet-demo",
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )
    return (
        boto3.client("ec2", **kw),
        boto3.client("elbv2", **kw),
        boto3.client("autoscaling", **kw),
    )


def tags(**kv) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in kv.items()]


def tag_list(pairs) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in pairs]


def wait_ready(ec2, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            ec2.describe_regions()
            return
        except Exception as e:  # noqa: BLE001 - any failure means "not up yet"
            if time.monotonic() > end:
                raise SystemExit(f"seed: moto did not answer within {deadline_s}s: {e}")
            time.sleep(0.2)


def seed(args) -> dict:
    ec2, elb, asg = clients(args.endpoint, args.region)
    wait_ready(ec2, args.wait)
    az_a, az_b = f"{args.region}a", f"{args.region}b"
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=tags(Name="mirrorfleet-demo"))
    subnet_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=az_a)["Subnet"]["SubnetId"]
    subnet_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone=az_b)["Subnet"]["SubnetId"]
    ec2.create_tags(Resources=[subnet_a], Tags=tags(Name="demo-a"))
    ec2.create_tags(Resources=[subnet_b], Tags=tags(Name="demo-b"))
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def instance(name: str, subnet: str, extra: list[tuple[str, str]]) -> dict:
        t = [("Name", name)] + extra
        inst = ec2.run_instances(
            ImageId=image,
            InstanceType="m5.large",
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(t)}],
        )["Instances"][0]
        eni = inst["NetworkInterfaces"][0]
        return {
            "name": name,
            "kind": "instance",
            "instance_id": inst["InstanceId"],
            "eni_id": eni["NetworkInterfaceId"],
            "ip": eni["PrivateIpAddress"],
            "subnet_id": subnet,
            "tags": dict(t),
        }

    web1 = instance("web-1", subnet_a, [MIRROR_TAG])
    web2 = instance("web-2", subnet_b, [MIRROR_TAG])
    web3 = instance("web-3", subnet_a, [MIRROR_TAG, (args.exclude_tag, "true")])
    batch1 = instance("batch-1", subnet_b, [])

    def eni(name: str, subnet: str, extra: list[tuple[str, str]], attach_to: str | None) -> dict:
        t = [("Name", name)] + extra
        n = ec2.create_network_interface(
            SubnetId=subnet,
            Description=f"mirrorfleet demo {name}",
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": tag_list(t)}],
        )["NetworkInterface"]
        if attach_to:
            ec2.attach_network_interface(NetworkInterfaceId=n["NetworkInterfaceId"], InstanceId=attach_to, DeviceIndex=1)
        return {
            "name": name,
            "kind": "eni",
            "instance_id": attach_to,
            "eni_id": n["NetworkInterfaceId"],
            "ip": n["PrivateIpAddress"],
            "subnet_id": subnet,
            "tags": dict(t),
        }

    api_eni = eni("api-eni", subnet_b, [MIRROR_TAG], batch1["instance_id"])
    spare_eni = eni("spare-eni", subnet_a, [], None)

    # The NLB in front of the rebuilder fleet: UDP/4789 listener, UDP target group with an HTTP
    # health check on the rebuilder's admin port.
    nlb = elb.create_load_balancer(Name="mirrorfleet-demo", Subnets=[subnet_a, subnet_b], Scheme="internal", Type="network")[
        "LoadBalancers"
    ][0]
    tg = elb.create_target_group(
        Name="mirrorfleet-rebuilders",
        Protocol="UDP",
        Port=4789,
        VpcId=vpc,
        TargetType="instance",
        HealthCheckProtocol="HTTP",
        HealthCheckPort="9445",
        HealthCheckPath="/healthz",
    )["TargetGroups"][0]
    elb.create_listener(
        LoadBalancerArn=nlb["LoadBalancerArn"],
        Protocol="UDP",
        Port=4789,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    target = ec2.create_traffic_mirror_target(
        NetworkLoadBalancerArn=nlb["LoadBalancerArn"],
        Description="mirrorfleet rebuilder NLB",
        TagSpecifications=[{"ResourceType": "traffic-mirror-target", "Tags": tags(Name="mirrorfleet-demo")}],
    )["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
    # moto does not implement CreateTrafficMirrorFilterRule: the filter stays rule-less here.
    filt = ec2.create_traffic_mirror_filter(
        Description="mirrorfleet: TCP to the web ports",
        TagSpecifications=[{"ResourceType": "traffic-mirror-filter", "Tags": tags(Name="mirrorfleet-demo")}],
    )["TrafficMirrorFilter"]["TrafficMirrorFilterId"]

    # The rebuilder fleet.
    ec2.create_launch_template(
        LaunchTemplateName=args.asg_name,
        LaunchTemplateData={"ImageId": image, "InstanceType": "c6in.large"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=args.asg_name,
        LaunchTemplate={"LaunchTemplateName": args.asg_name, "Version": "$Latest"},
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=1,
        VPCZoneIdentifier=f"{subnet_a},{subnet_b}",
        TargetGroupARNs=[tg["TargetGroupArn"]],
        # A blanket tag policy marks everything in the VPC for mirroring, the rebuilders too:
        # the control plane must still never mirror its own fleet.
        Tags=[
            {
                "Key": MIRROR_TAG[0],
                "Value": MIRROR_TAG[1],
                "PropagateAtLaunch": True,
                "ResourceId": args.asg_name,
                "ResourceType": "auto-scaling-group",
            }
        ],
    )
    rebuilders = []
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[args.asg_name])["AutoScalingGroups"][0]
    for n, member in enumerate(sorted(i["InstanceId"] for i in group.get("Instances", [])), start=1):
        inst = ec2.describe_instances(InstanceIds=[member])["Reservations"][0]["Instances"][0]
        eni0 = inst["NetworkInterfaces"][0]
        rebuilders.append(
            {
                "name": f"rebuilder-{n}",
                "kind": "instance",
                "instance_id": member,
                "eni_id": eni0["NetworkInterfaceId"],
                "ip": eni0["PrivateIpAddress"],
                "subnet_id": eni0["SubnetId"],
                "tags": {t["Key"]: t["Value"] for t in inst.get("Tags", []) if not t["Key"].startswith("aws:")},
            }
        )

    # Somebody else's session on batch-1's primary ENI: no owner tag, so never ours to touch.
    foreign = ec2.create_traffic_mirror_session(
        NetworkInterfaceId=batch1["eni_id"],
        TrafficMirrorTargetId=target,
        TrafficMirrorFilterId=filt,
        SessionNumber=1,
        VirtualNetworkId=777,
        Description="manually created, not ours",
        TagSpecifications=[{"ResourceType": "traffic-mirror-session", "Tags": tags(team="netops")}],
    )["TrafficMirrorSession"]["TrafficMirrorSessionId"]

    resources = [web1, web2, web3, batch1, api_eni, spare_eni] + rebuilders
    return {
        "endpoint": args.endpoint,
        "region": args.region,
        "vpc_id": vpc,
        "subnet_ids": [subnet_a, subnet_b],
        "image_id": image,
        "resources": resources,
        "by_name": {r["name"]: r for r in resources},
        "nlb_arn": nlb["LoadBalancerArn"],
        "target_group_arn": tg["TargetGroupArn"],
        "target_id": target,
        "filter_id": filt,
        "asg_name": args.asg_name,
        "foreign_session_id": foreign,
        "exclude_tag": args.exclude_tag,
        "expected_mirrored": sorted([web1["eni_id"], web2["eni_id"], api_eni["eni_id"]]),
        "expected_untouched": sorted([web3["eni_id"], batch1["eni_id"], spare_eni["eni_id"]] + [r["eni_id"] for r in rebuilders]),
        # after the demo's onboard-eni events (web-1 running, api-eni created, web-3 tagged):
        "expected_after_events": sorted([web1["eni_id"], api_eni["eni_id"]]),
    }


def list_sessions(ec2) -> list[dict]:
    out = []
    token = None
    while True:
        kw = {"MaxResults": 100}
        if token:
            kw["NextToken"] = token
        page = ec2.describe_traffic_mirror_sessions(**kw)
        for s in page.get("TrafficMirrorSessions", []):
            out.append(
                {
                    "session_id": s["TrafficMirrorSessionId"],
                    "eni_id": s["NetworkInterfaceId"],
                    "target_id": s["TrafficMirrorTargetId"],
                    "filter_id": s["TrafficMirrorFilterId"],
                    "session_number": s.get("SessionNumber"),
                    "vni": s.get("VirtualNetworkId"),
                    "packet_length": s.get("PacketLength"),
                    "tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])},
                }
            )
        token = page.get("NextToken")
        if not token:
            return sorted(out, key=lambda s: (s["eni_id"], s["session_number"] or 0))


def asg_state(autoscaling, name: str) -> dict:
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not groups:
        raise SystemExit(f"seed: no auto scaling group named {name}")
    g = groups[0]
    return {"name": name, "min": g["MinSize"], "max": g["MaxSize"], "desired": g["DesiredCapacity"], "instances": len(g.get("Instances", []))}


def report(args) -> None:
    ec2, _, autoscaling = clients(args.endpoint, args.region)
    world = json.load(open(args.seed_file))
    sessions = list_sessions(ec2)
    by_eni: dict[str, list[dict]] = {}
    for s in sessions:
        by_eni.setdefault(s["eni_id"], []).append(s)
    want = set(world["expected_mirrored"])
    rows = [("name", "ENI", "tags", "should be", "session", "no.", "VNI", "owner")]
    known = set()
    for r in world["resources"]:
        known.add(r["eni_id"])
        t = ",".join(f"{k}={v}" for k, v in sorted(r["tags"].items()) if k != "Name") or "-"
        expect = "mirrored" if r["eni_id"] in want else "left alone"
        for s in by_eni.get(r["eni_id"]) or [None]:
            if s is None:
                rows.append((r["name"], r["eni_id"], t, expect, "-", "-", "-", "-"))
            else:
                owner = s["tags"].get(OWNER_TAG_KEY, "(not ours)")
                rows.append((r["name"], r["eni_id"], t, expect, s["session_id"], str(s["session_number"]), str(s["vni"]), owner))
    for s in sessions:
        if s["eni_id"] not in known:
            rows.append(("?", s["eni_id"], "?", "?", s["session_id"], str(s["session_number"]), str(s["vni"]), s["tags"].get(OWNER_TAG_KEY, "(not ours)")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"  traffic mirror sessions on target {world['target_id']}:")
    for i, row in enumerate(rows):
        print("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("    " + "  ".join("-" * w for w in widths))
    g = asg_state(autoscaling, world["asg_name"])
    owned = sum(1 for s in sessions if OWNER_TAG_KEY in s["tags"])
    print(f"  rebuilder ASG {g['name']}: desired capacity {g['desired']} (min {g['min']}, max {g['max']}); sessions owned by mirrorfleet: {owned}")


def verify(args) -> int:
    """Check the sessions against the expectation; print each problem; exit 1 on any."""
    ec2, _, autoscaling = clients(args.endpoint, args.region)
    world = json.load(open(args.seed_file))
    sessions = list_sessions(ec2)
    expected = world["expected_after_events"] if args.stage == "events" else world["expected_mirrored"]
    problems = []
    owned = [s for s in sessions if s["tags"].get(OWNER_TAG_KEY) == args.owner]
    owned_enis = sorted(s["eni_id"] for s in owned)
    if owned_enis != sorted(expected):
        problems.append(f"owned sessions are on {owned_enis}, expected exactly one on each of {sorted(expected)}")
    for s in owned:
        if s["vni"] != args.vni:
            problems.append(f"session {s['session_id']} has VNI {s['vni']}, expected {args.vni}")
        if s["target_id"] != world["target_id"] or s["filter_id"] != world["filter_id"]:
            problems.append(f"session {s['session_id']} uses target {s['target_id']} / filter {s['filter_id']}")
    foreign = [s for s in sessions if s["session_id"] == world["foreign_session_id"]]
    if not foreign:
        problems.append(f"the unowned session {world['foreign_session_id']} was deleted")
    elif foreign[0]["vni"] != 777 or OWNER_TAG_KEY in foreign[0]["tags"]:
        problems.append(f"the unowned session {world['foreign_session_id']} was modified: {foreign[0]}")
    if args.desired is not None:
        g = asg_state(autoscaling, world["asg_name"])
        if g["desired"] != args.desired:
            problems.append(f"ASG desired capacity is {g['desired']}, expected {args.desired}")
    for p in problems:
        print(f"  MISMATCH: {p}")
    if not problems:
        print(f"  ok: {len(owned)} owned sessions exactly where expected, the unowned session untouched"
              + (f", desired capacity {args.desired}" if args.desired is not None else ""))
    return 1 if problems else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="moto server URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--region", default="us-east-1")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--asg-name", default="mirrorfleet-rebuilders")
    s.add_argument("--exclude-tag", default=DEFAULT_EXCLUDE_TAG)
    s.add_argument("--wait", type=float, default=20.0, help="seconds to wait for moto to answer")
    s.add_argument("--out", help="also write the JSON here")
    sub.add_parser("sessions")
    a = sub.add_parser("asg")
    a.add_argument("--name", default="mirrorfleet-rebuilders")
    u = sub.add_parser("untag")
    u.add_argument("--resource", required=True, action="append", help="instance or ENI id (repeatable)")
    u.add_argument("--key", required=True)
    r = sub.add_parser("report")
    r.add_argument("--seed-file", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--seed-file", required=True)
    v.add_argument("--stage", choices=["events", "reconcile"], required=True)
    v.add_argument("--owner", required=True)
    v.add_argument("--vni", type=int, required=True)
    v.add_argument("--desired", type=int)
    args = p.parse_args()

    if args.cmd == "seed":
        world = seed(args)
        text = json.dumps(world, indent=2, sort_keys=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        print(text)
    elif args.cmd == "sessions":
        ec2, _, _ = clients(args.endpoint, args.region)
        print(json.dumps(list_sessions(ec2), indent=2, sort_keys=True))
    elif args.cmd == "asg":
        _, _, autoscaling = clients(args.endpoint, args.region)
        print(json.dumps(asg_state(autoscaling, args.name), sort_keys=True))
    elif args.cmd == "untag":
        ec2, _, _ = clients(args.endpoint, args.region)
        ec2.delete_tags(Resources=args.resource, Tags=[{"Key": args.key}])
        print(json.dumps({"untagged": args.resource, "key": args.key}))
    elif args.cmd == "report":
        report(args)
    elif args.cmd == "verify":
        sys.exit(verify(args))


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)
