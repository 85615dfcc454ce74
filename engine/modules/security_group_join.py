"""Join tables of a resource and its VPC security groups (IaSQL's ``@ManyToMany`` ``securityGroups``
/ ``vpcSecurityGroups``), shared by ``aws_rds`` (``rds_security_groups``,
``db_cluster_security_groups``) and ``aws_memory_db`` (``memory_db_cluster_security_groups``).

A join row ``(fk, security_group_id[, region])`` exists in the cloud when the parent resource's
groups (the parent mapper's records carry them as ``_vpc_security_groups``, AWS ids) include the
group of that ``security_group`` row. Inserting or deleting a join row gives the parent the
groups of all its join rows (plus, for an insert, the row's group; minus, for a delete, the row's
group), keeping the groups the ``security_group`` table does not hold; nothing is called when the
parent already has them. A parent created in the same commit gets its groups from its own create
(which reads the join table), so the join row's create then finds nothing to do.
"""

from __future__ import annotations

from typing import Any

from engine.aws import CloudError
from engine.modules.aws_vpc import VpcModuleMapper
from engine.modules.base import Col, MapperContext


class SecurityGroupJoinMapper(VpcModuleMapper):
    """A join table of ``parent`` rows (column ``fk``, the parent's database id) and
    ``security_group`` rows. ``ident`` is the parent's cloud-name column (the parent's identity is
    ``(ident, region)``); ``with_region``: the join table has its own ``region`` column (part of
    its key, as IaSQL's ``memory_db_cluster_security_groups``). Subclasses implement
    ``set_groups``; ``at_least_one`` refuses to take a parent's last group."""

    at_least_one = False
    cloud_read_uses_db = True

    def __init__(self, table: str, parent: Any, fk: str, ident: str, with_region: bool = False):
        self.table, self.parent, self.fk, self.ident, self.with_region = table, parent, fk, ident, with_region
        cols = [Col(fk, "int")] + ([Col("region")] if with_region else []) + [Col("security_group_id", "int")]
        self.columns = tuple(cols)
        self.key = self.pk = tuple(c.name for c in cols)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"security group #{rec.get('security_group_id')} of {self.parent.table} #{rec.get(self.fk)}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A join row is its key: nothing to update."""
        return True

    async def set_groups(self, mc: MapperContext, region: str, ident: str, groups: list[str]) -> None:
        """Give the parent ``ident`` of ``region`` exactly the AWS security groups ``groups``."""
        raise NotImplementedError

    async def _groups(self, mc: MapperContext) -> tuple[dict, dict]:
        """``({(region, AWS group id): row id}, {row id: (region, AWS group id)})`` of ``security_group``."""
        rows = await mc.fetchall("SELECT id, group_id, region FROM public.security_group WHERE group_id IS NOT NULL")
        return {(r, g): i for i, g, r in rows}, {i: (r, g) for i, g, r in rows}

    def _rec(self, parent_id: Any, region: str, group_id: Any) -> dict:
        rec = {self.fk: parent_id, "security_group_id": group_id}
        if self.with_region:
            rec["region"] = region
        return rec

    async def read(self, mc: MapperContext) -> list[dict]:
        """One record per (parent with a row, its group with a ``security_group`` row), every
        enabled region. Raises engine.aws.CloudError."""
        rows = await mc.fetchall(f'SELECT id, "{self.ident}", region FROM public."{self.parent.table}"')
        parents = {(r, n): i for i, n, r in rows}
        by_aws, _ = await self._groups(mc)
        out = []
        supported = getattr(self.parent, "supported_regions", None)
        for region in mc.regions:
            if supported is not None and region not in supported:
                continue
            for p in await self.parent._records(mc, region):
                pid = parents.get((region, p[self.ident]))
                if pid is None:
                    continue
                for g in p.get("_vpc_security_groups") or []:
                    if (region, g) in by_aws:
                        out.append(self._rec(pid, region, by_aws[(region, g)]))
        return out

    async def _set(self, mc: MapperContext, rec: dict, add: bool) -> dict:
        """Give the parent of ``rec`` the groups of its join rows, with (``add``) or without the
        group of ``rec``; returns the join record. Raises engine.aws.CloudError
        (DependencyViolation while the parent or the group is not created yet)."""
        op = f"{self.parent.table}.{self.table}"
        rows = await mc.fetchall(f'SELECT "{self.ident}", region FROM public."{self.parent.table}" WHERE id = $1',
                                 (rec.get(self.fk),))
        done = self._rec(rec.get(self.fk), rec.get("region"), rec.get("security_group_id"))
        if not rows:
            return done  # the parent row is gone: its deletion takes the groups along
        ident, region = rows[0]
        got = [p for p in await self.parent._records(mc, region) if p[self.ident] == ident]
        if not got:
            if not add:
                return done
            raise CloudError("DependencyViolation", f"{self.parent.table} #{rec.get(self.fk)} is not created in the "
                             "cloud yet", op)
        have = list(got[0].get("_vpc_security_groups") or [])
        by_aws, by_db = await self._groups(mc)
        mine = {g for (r, g) in by_aws if r == region}
        want = [g for g in have if g not in mine]  # groups the table does not hold stay
        for (sid,) in await mc.fetchall(f'SELECT security_group_id FROM public."{self.table}" WHERE "{self.fk}" = $1',
                                        (rec.get(self.fk),)):
            if sid in by_db and by_db[sid][0] == region and by_db[sid][1] not in want:
                want.append(by_db[sid][1])
        target = by_db.get(rec.get("security_group_id"))
        if target is None or target[0] != region:
            if add:
                raise CloudError("DependencyViolation", f"security group #{rec.get('security_group_id')} is not "
                                 f"created in the cloud yet (in {region})", op)
            return done
        if add and target[1] not in want:
            want.append(target[1])
        if not add:
            want = [g for g in want if g != target[1]]
            if not want and self.at_least_one:
                raise CloudError("InvalidParameterCombination", f"{self.parent.table} {ident} needs at least one VPC "
                                 "security group: insert another before deleting the last", op)
        if sorted(want) != sorted(have):
            await self.set_groups(mc, region, ident, want)
        return done

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Add the row's group to its parent; returns the record. Raises engine.aws.CloudError."""
        return await self._set(mc, row, True)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never planned (join rows are replaced); adds the row's group."""
        return await self._set(mc, row, True)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Take the group off its parent. Raises engine.aws.CloudError."""
        await self._set(mc, cloud, False)
