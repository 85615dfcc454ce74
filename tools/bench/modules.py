"""How long the engine takes over a large account: ``python -m tools.bench.modules`` (issue 18, point 4).

Starts a throwaway Postgres and a moto server, creates ``--instances`` EC2 instances (``run_instances``
with MinCount/MaxCount, spread over the first subnets) and ``--subnets`` subnets directly in moto
with boto3, then times, through the engine (``engine.local``, no proxy):

- ``iasql_install('aws_ec2', 'aws_vpc')``: installs aws_account, aws_iam, aws_vpc,
  aws_security_group, aws_acm, aws_elb and aws_ec2 and reads every record of the two named
  modules into the new tables (aws_ec2's root volumes and their mappings among them);
- ``iasql_commit`` after changing one instance's tags (apply that instance, then sync every
  installed table back);
- ``iasql_rollback`` with nothing changed (a full sync).

Each is run once per round (``--rounds``, a fresh database and cloud each time) and the median is
reported, with the goal (each under 10 s), next to what moto alone needs for the instance reads an
install makes (``_cloud_floor``: on a shared machine it shows the load the figures were taken under). Also a phase of ``make bench`` (``BENCH_SKIP=modules``
skips it); README "Performance" quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

GOAL_SECONDS = 10.0


def _setup_cloud(endpoint: str, instances: int, subnets: int) -> dict:
    """``subnets`` subnets in one new VPC and ``instances`` instances in the first of them, made
    with boto3 directly in moto. Returns what was made (counts and seconds)."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    t0 = time.monotonic()
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    made = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=zones[n % len(zones)])
            ["Subnet"]["SubnetId"] for n in range(subnets)]
    ami = min(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    per, left, n = 250, instances, 0  # a /24 holds 251 addresses
    while left > 0:
        count = min(per, left)
        ec2.run_instances(ImageId=ami, InstanceType="t2.micro", MinCount=count, MaxCount=count,
                          SubnetId=made[n % len(made)] if made else None) if made else \
            ec2.run_instances(ImageId=ami, InstanceType="t2.micro", MinCount=count, MaxCount=count)
        left -= count
        n += 1
    return {"instances": instances, "subnets": subnets, "setup_s": time.monotonic() - t0}


def _cloud_floor(endpoint: str) -> float:
    """Seconds moto alone needs for what an install must ask it about the instances (no engine):
    one paginated ``describe_instances`` and one user-data read per instance, 16 at a time, with
    plain boto3. Measured in the same round, it shows how loaded the machine is."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    t0 = time.monotonic()
    ids = [i["InstanceId"] for page in ec2.get_paginator("describe_instances").paginate()
           for r in page["Reservations"] for i in r["Instances"]]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: ec2.describe_instance_attribute(InstanceId=i, Attribute="userData"), ids))
    return time.monotonic() - t0


async def _timed(reg, caller, name: str, *args) -> tuple[float, list]:
    from engine.local import call_in_transaction

    t0 = time.monotonic()
    rows = await call_in_transaction(reg.get(name), caller, *args)
    return time.monotonic() - t0, rows


async def _one_round(pg, moto, instances: int, subnets: int) -> dict:
    """One fresh database and cloud: setup, then the three timings. Returns seconds and counts."""
    import psycopg

    from engine import EngineSettings, build_registry
    from engine.local import PsycopgCaller

    moto.reset()
    made = await asyncio.to_thread(_setup_cloud, moto.endpoint_url, instances, subnets)
    made["cloud_floor_s"] = await asyncio.to_thread(_cloud_floor, moto.endpoint_url)
    name = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    reg = build_registry(EngineSettings(aws_endpoint_url=moto.endpoint_url))
    caller = await PsycopgCaller.connect(pg.dsn(name))
    try:
        install_s, rows = await _timed(reg, caller, "iasql_install", "aws_ec2", "aws_vpc")
        counts = {t: n for _, t, n in rows}
        await caller.run("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
        await caller.commit()
        await _timed(reg, caller, "iasql_begin")
        await caller.run("""UPDATE instance SET tags = '{"bench": "changed"}' WHERE id = (SELECT min(id) FROM instance)""")
        await caller.commit()
        commit_s, rows = await _timed(reg, caller, "iasql_commit")
        applied = [r for r in rows if not str(r[3]).startswith("synced")]
        await _timed(reg, caller, "iasql_begin")
        rollback_s, _ = await _timed(reg, caller, "iasql_rollback")
    finally:
        await caller.close()
        reg.engine_state.aws.close()
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {**made, "install_s": install_s, "commit_s": commit_s, "rollback_s": rollback_s,
            "rows_instance": counts.get("instance"), "rows_subnet": counts.get("subnet"), "commit_applied": len(applied)}


def measure(instances: int = 1000, subnets: int = 200, rounds: int = 1, say=print) -> dict:
    """Run ``rounds`` rounds (own Postgres and moto, stopped afterwards); returns the medians
    (``install_s``, ``commit_s``, ``rollback_s``), every round, and whether each met the goal."""
    from proxy.embedded.moto import MotoServer
    from proxy.embedded.postgres import EmbeddedPostgres

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    pg = EmbeddedPostgres(password="postgres").start()
    moto = MotoServer().start()
    runs = []
    try:
        for r in range(rounds):
            got = asyncio.run(_one_round(pg, moto, instances, subnets))
            say(f"modules round {r + 1}/{rounds}: install {got['install_s']:.2f} s, commit {got['commit_s']:.2f} s, "
                f"rollback {got['rollback_s']:.2f} s ({got['rows_instance']} instance rows, "
                f"{got['rows_subnet']} subnet rows; cloud setup {got['setup_s']:.1f} s; moto alone for the "
                f"instance reads {got['cloud_floor_s']:.2f} s)")
            runs.append(got)
    finally:
        moto.stop()
        pg.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in ("install_s", "commit_s", "rollback_s")}
    floor = statistics.median(r["cloud_floor_s"] for r in runs)
    return {"instances": instances, "subnets": subnets, "rounds": runs, **med, "cloud_floor_s": floor,
            "load": " ".join(open("/proc/loadavg").read().split()[:3]),
            "goal_s": GOAL_SECONDS, "met": {k: v < GOAL_SECONDS for k, v in med.items()}}


def main(argv: list[str] | None = None) -> int:
    """Command line: measure and print the medians; exit status 0 when every goal is met, else 1."""
    p = argparse.ArgumentParser(prog="python -m tools.bench.modules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--subnets", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1)
    a = p.parse_args(argv)
    res = measure(a.instances, a.subnets, a.rounds)
    print(f"{a.instances} instances, {a.subnets} subnets, median of {a.rounds}: "
          f"iasql_install('aws_ec2', 'aws_vpc') {res['install_s']:.2f} s, iasql_commit (one instance's tags) "
          f"{res['commit_s']:.2f} s, iasql_rollback {res['rollback_s']:.2f} s (moto alone for the instance reads "
          f"{res['cloud_floor_s']:.2f} s; load {res['load']}); goal each < {GOAL_SECONDS:.0f} s: "
          + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["met"].items()))
    return 0 if all(res["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
