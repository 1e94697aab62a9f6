"""A small random grammar of SQLAlchemy 2 statements over Project, Task and Plan.

Or over their twins, and Plan: a :class:`Schema` names the models (``TENANT_SCHEMA``;
``OWNER_SCHEMA``, owner-scoped; ``POLICY_SCHEMA``, under a row policy; ``FAMILY_SCHEMA``, a
project read down the tenant family), the values of their scoping columns and the seed's
project ids. The owner twins' ``owner_id`` is compared, linked and written like ``tenant_id``;
the policy twins' ``archived`` is tested (``NOT archived``, ``archived IS true``...) and written,
rarely, with literals, SQL constants and, in an UPDATE, expressions of the row.

``Grammar(rng, ...).statement()`` builds one statement: a SELECT (entities or columns, joins,
subqueries, unions, CTEs, aggregates, expressions, compound WHERE clauses, ORDER BY/LIMIT) or a
write (INSERT, UPDATE, DELETE, some with RETURNING). Each comes back as a :class:`Generated`
that says whether it writes, whether its rows come in a deterministic order, which explicit
primary keys it inserts, and a short ``shape`` naming the constructs it used.

The grammar is type-aware (integers are compared with integers, names with names, booleans with
``true()``/``false()``) so that most statements are valid on every dialect; scalar subqueries
are aggregates, or select a project by its name (unique per tenant), so that they return one
row whatever the database. ``LIMIT`` comes only with an ``ORDER BY`` over every output column,
so a limited result is the same on any database that holds the same rows. For the same reason
an ``UPDATE ... FROM`` takes values from the other table only through a join on its key, and on
SQLite an UPDATE or DELETE has no subquery on its own table (see :class:`Capabilities`).

``generate(seed, index, caps)`` gives each statement a generator of its own, so one statement
can be rebuilt from its seed and index.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models import (
    FamilyProject,
    FamilyTask,
    OwnedProject,
    OwnedTask,
    Plan,
    PolicyProject,
    PolicyTask,
    Project,
    Task,
)
from sqlalchemy import (
    and_,
    case,
    delete,
    distinct,
    except_,
    false,
    func,
    insert,
    intersect,
    not_,
    or_,
    select,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy.orm import aliased

INT, STR, BOOL = "int", "str", "bool"


@dataclass(frozen=True)
class Schema:
    """The models a run generates over: a project model, a task model pointing at it (with the
    relationships ``tasks``, ``project``, ``open_tasks`` and the column ``task_count``), and
    Plan; with the seed's facts the grammar needs (see test_generated.py)."""

    project: Any
    task: Any
    plan: Any
    columns: dict[Any, dict[str, str]]
    literals: dict[str, tuple[str, ...]]  # values of the scoping columns, by column name
    row_scope_columns: tuple[str, ...]  # the scoping columns beside tenant_id
    own_projects: tuple[int, ...]  # ids of the session's projects in the seed
    other_projects: tuple[int, ...]  # ids of other scopes' projects, and of none at all
    policy_columns: tuple[str, ...] = ()  # boolean columns a row policy of both models reads

    @property
    def models(self) -> tuple[Any, Any, Any]:
        return (self.project, self.task, self.plan)

    @property
    def scope_columns(self) -> tuple[str, ...]:
        return ("tenant_id", *self.row_scope_columns)

    @property
    def guarded_columns(self) -> tuple[str, ...]:
        """The columns writes set rarely: the scoping ones, and those a row policy reads."""
        return (*self.scope_columns, *self.policy_columns)


TENANTS = ("acme", "globex")
OWNERS = ("alice", "bob", "Alice")

TENANT_SCHEMA = Schema(
    project=Project,
    task=Task,
    plan=Plan,
    columns={
        Project: {"id": INT, "name": STR, "tenant_id": STR},
        Task: {"id": INT, "name": STR, "done": BOOL, "project_id": INT, "tenant_id": STR},
        Plan: {"id": INT, "name": STR},
    },
    literals={"tenant_id": TENANTS},
    row_scope_columns=(),
    own_projects=(1, 3, 6, 7, 9),  # acme's
    other_projects=(2, 4, 5, 8, 999),  # globex's, and none at all
)
"""The tenant world: acme's session over Project and Task."""

OWNER_SCHEMA = Schema(
    project=OwnedProject,
    task=OwnedTask,
    plan=Plan,
    columns={
        OwnedProject: {"id": INT, "name": STR, "owner_id": STR, "tenant_id": STR},
        OwnedTask: {
            "id": INT,
            "name": STR,
            "done": BOOL,
            "project_id": INT,
            "owner_id": STR,
            "tenant_id": STR,
        },
        Plan: {"id": INT, "name": STR},
    },
    literals={"tenant_id": TENANTS, "owner_id": OWNERS},
    row_scope_columns=("owner_id",),
    own_projects=(1, 4, 8, 9, 12),  # acme's alice's
    other_projects=(2, 3, 5, 6, 7, 10, 11, 999),  # acme's bob's, globex's alice's, and none
)
"""The owner world: acme's session for alice over OwnedProject and OwnedTask."""

POLICY_SCHEMA = Schema(
    project=PolicyProject,
    task=PolicyTask,
    plan=Plan,
    columns={
        PolicyProject: {"id": INT, "name": STR, "archived": BOOL, "tenant_id": STR},
        PolicyTask: {
            "id": INT,
            "name": STR,
            "done": BOOL,
            "project_id": INT,
            "archived": BOOL,
            "tenant_id": STR,
        },
        Plan: {"id": INT, "name": STR},
    },
    literals={"tenant_id": TENANTS},
    row_scope_columns=(),
    own_projects=(1, 4, 7, 9, 12),  # acme's live
    other_projects=(2, 3, 5, 6, 8, 10, 11, 999),  # acme's archived, globex's, and none
    policy_columns=("archived",),
)
"""The policy world: acme's session over PolicyProject and PolicyTask, live rows only."""

FAMILY_SCHEMA = Schema(
    project=FamilyProject,
    task=FamilyTask,
    plan=Plan,
    columns={
        FamilyProject: {"id": INT, "name": STR, "tenant_id": STR},
        FamilyTask: {"id": INT, "name": STR, "done": BOOL, "project_id": INT, "tenant_id": STR},
        Plan: {"id": INT, "name": STR},
    },
    literals={"tenant_id": ("acme", "holding", "initech", "globex")},
    row_scope_columns=(),
    own_projects=(1, 5, 9, 12),  # acme's
    other_projects=(2, 3, 4, 6, 7, 8, 10, 11, 999),  # its parent's, sibling's, globex's, none
)
"""The family world: acme's session reading FamilyProject with its parent holding's rows."""

# Names of the seed (see test_generated.py) and a few nobody has.
NAMES = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "omega",
    "empty",
    "design",
    "build",
    "ship",
    "planted",
    "leak-probe",
    "orphan",
    "secret",
    "review",
    "free",
    "pro",
    "zeta",
)
SMALL_INTS = (*range(0, 17), 999)
EXPLICIT_ID_BASE = 1_000_000
"""Explicit primary keys of inserted rows start here, far above the seed's and autoincrement's."""


@dataclass
class Source:
    """Something a statement selects from: a model, an alias, a derived table or a CTE."""

    obj: Any  # the mapped class, aliased class, Subquery or CTE
    model: Any | None  # the mapped class when ``obj`` yields entities, else None
    cols: dict[str, tuple[Any, str]]  # name -> (column expression, type)
    label: str
    plain: bool = False  # the mapped class itself (not an alias)

    def of_type(self, type_: str) -> list[Any]:
        return [col for col, t in self.cols.values() if t == type_]

    def col(self, name: str) -> Any:
        return self.cols[name][0]


@dataclass
class Generated:
    statement: Any
    write: bool
    shape: str
    ordered: bool = False
    returning: bool = False
    explicit_ids: frozenset[int] = frozenset()


@dataclass
class Capabilities:
    insert_returning: bool
    update_returning: bool
    delete_returning: bool
    delete_using: bool  # DELETE ... USING / multi-table DELETE (not SQLite)
    full_join: bool  # FULL OUTER JOIN (not MariaDB)
    # Subqueries on the table an UPDATE or DELETE writes. SQLite reads such a subquery as the
    # statement changes the table (DELETE ... WHERE project_id IN (SELECT id FROM the same
    # table) deletes more or fewer rows depending on their order), so not there.
    self_referencing_writes: bool


@dataclass
class Grammar:
    rng: random.Random
    caps: Capabilities
    schema: Schema = TENANT_SCHEMA
    tags: list[str] = field(default_factory=list)
    plain_models: set[Any] = field(default_factory=set)  # models used unaliased so far
    written: Any = None  # the model an UPDATE or DELETE writes, kept out of its subqueries
    explicit_ids: set[int] = field(default_factory=set)
    _names: Any = field(default_factory=lambda: itertools.count(1))

    # ----------------------------------------------------------------------------------------
    # Entry point

    def statement(self) -> Generated:
        if self.rng.random() < 0.55:
            return self.read()
        return self.write()

    def _done(self, statement: Any, *, write: bool, **kw: Any) -> Generated:
        return Generated(
            statement,
            write=write,
            shape=" ".join(self.tags),
            explicit_ids=frozenset(self.explicit_ids),
            **kw,
        )

    def tag(self, name: str) -> None:
        self.tags.append(name)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, items: Any) -> Any:
        return self.rng.choice(list(items))

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._names)}"

    # ----------------------------------------------------------------------------------------
    # Sources

    def entity(self, model: Any, *, alias: bool) -> Source:
        obj = aliased(model) if alias else model
        if not alias:
            self.plain_models.add(model)
        cols = {name: (getattr(obj, name), t) for name, t in self.schema.columns[model].items()}
        label = f"{'aliased ' if alias else ''}{model.__name__}"
        return Source(obj, model, cols, label, plain=not alias)

    def models(self) -> list[Any]:
        """The models a subquery may read."""
        return [m for m in self.schema.models if m is not self.written]

    def new_entity(self, outer: list[Source], model: Any | None = None) -> Source:
        """A source of ``model`` for a subquery or join: an alias if the class is taken (the
        statement's FROM list would swallow it by auto-correlation)."""
        model = model or self.pick(self.models())
        taken = model in self.plain_models or any(s.plain and s.model is model for s in outer)
        return self.entity(model, alias=taken or self.chance(0.4))

    def derived(self, outer: list[Source], depth: int) -> Source:
        """A derived table or CTE: grouped counts, a column projection, or an ORM entity
        aliased to a subquery of its own rows."""
        as_cte = self.chance(0.5)
        kind = "cte" if as_cte else "subquery"
        name = self.fresh("d")
        r = self.rng.random()
        model = self.pick(self.schema.models)
        inner = self.entity(model, alias=self.chance(0.3))
        if r < 0.3 and model is not self.schema.plan:
            group = inner.col("project_id") if model is self.schema.task else inner.col("tenant_id")
            group_name = "project_id" if model is self.schema.task else "tenant_id"
            stmt = select(group.label(group_name), func.count().label("n")).group_by(group)
            if self.chance(0.5):
                stmt = stmt.where(self.predicate([inner], depth + 1))
            self.tag(f"{kind}[group-count {model.__name__}]")
            made = stmt.cte(name) if as_cte else stmt.subquery(name)
            types = {group_name: INT if model is self.schema.task else STR, "n": INT}
            cols = {key: (made.c[key], t) for key, t in types.items()}
            return Source(made, None, cols, f"{kind} {name}")
        if r < 0.55:
            stmt = select(inner.obj)
            if self.chance(0.7):
                stmt = stmt.where(self.predicate([inner], depth + 1))
            made = stmt.cte(name) if as_cte else stmt.subquery(name)
            ent = aliased(model, made)
            self.tag(f"entity-from-{kind}[{model.__name__}]")
            cols = {key: (getattr(ent, key), t) for key, t in self.schema.columns[model].items()}
            return Source(ent, model, cols, f"{model.__name__} from {kind} {name}")
        names = self.rng.sample(
            sorted(self.schema.columns[model]), self.rng.randint(1, len(self.schema.columns[model]))
        )
        if "id" not in names and self.chance(0.6):
            names.append("id")
        stmt = select(*(inner.col(n).label(n) for n in names))
        if self.chance(0.7):
            stmt = stmt.where(self.predicate([inner], depth + 1))
        if self.chance(0.15):
            stmt = stmt.distinct()
            self.tag("distinct")
        made = stmt.cte(name) if as_cte else stmt.subquery(name)
        self.tag(f"{kind}[{model.__name__}]")
        cols = {n: (made.c[n], self.schema.columns[model][n]) for n in names}
        return Source(made, None, cols, f"{kind} {name}")

    # ----------------------------------------------------------------------------------------
    # Scalars

    def literal(self, name: str, type_: str) -> Any:
        if type_ == INT:
            return self.pick(SMALL_INTS)
        if type_ == BOOL:
            return self.pick((True, False))
        if name in self.schema.literals:
            return self.pick(self.schema.literals[name])
        return self.pick(NAMES)

    def named_columns(self, srcs: list[Source]) -> list[tuple[str, Any, str]]:
        return [(name, col, t) for src in srcs for name, (col, t) in src.cols.items()]

    def comparison(self, srcs: list[Source]) -> Any:
        name, col, t = self.pick(self.named_columns(srcs))
        r = self.rng.random()
        if t == BOOL:
            self.tag("bool")
            if name in self.schema.policy_columns and self.chance(0.5):
                self.tag("policy-test")
                return self.pick(
                    (not_(col), col, col.is_(True), col != true(), col.in_([False, True]))
                )
            return col == (true() if self.chance(0.5) else false())
        if t == INT:
            if r < 0.35:
                return col == self.literal(name, t)
            if r < 0.5:
                return col != self.literal(name, t)
            if r < 0.6:
                return col > self.literal(name, t)
            if r < 0.7:
                return col <= self.literal(name, t)
            if r < 0.8:
                return col.in_([self.literal(name, t) for _ in range(3)])
            if r < 0.9:
                return col.is_(None) if self.chance(0.5) else col.is_not(None)
            self.tag("arith")
            return (col + 1) == self.literal(name, t)
        if r < 0.45:
            return col == self.literal(name, t)
        if r < 0.55:
            return col != self.literal(name, t)
        if r < 0.7:
            return col.in_([self.literal(name, t) for _ in range(3)])
        if r < 0.8:
            self.tag("like")
            return col.like(self.literal(name, t)[:2] + "%")
        if r < 0.9:
            self.tag("lower")
            return func.lower(col) == self.literal(name, t)
        self.tag("length")
        return func.length(col) > self.rng.randint(3, 6)

    def predicate(self, srcs: list[Source], depth: int = 0) -> Any:
        r = self.rng.random()
        if depth < 2 and r < 0.25:
            parts = [self.predicate(srcs, depth + 1) for _ in range(self.rng.randint(2, 3))]
            if self.chance(0.55):
                self.tag("and_")
                expr = and_(*parts)
            else:
                self.tag("or_")
                expr = or_(*parts)
            if self.chance(0.2):
                self.tag("not_")
                expr = not_(expr)
            return expr
        if depth < 3 and r < 0.5:
            return self.subquery_predicate(srcs, depth + 1)
        if r < 0.6:
            same = self.column_pair(srcs)
            if same is not None:
                self.tag("col=col")
                return same
        return self.comparison(srcs)

    def column_pair(self, srcs: list[Source]) -> Any:
        cols = self.named_columns(srcs)
        a = self.pick(cols)
        partners = [c for c in cols if c[2] == a[2] and c[1] is not a[1] and a[2] != BOOL]
        if not partners:
            return None
        return a[1] == self.pick(partners)[1]

    def link(self, inner: Source, outer: Source, *, keyed: bool = False) -> Any:
        """A join or correlation condition between two sources, on matching columns;
        ``keyed``: on ``inner``'s primary key, so that each outer row meets one inner row."""
        pairs = [
            ("project_id", "id"),
            ("id", "project_id"),
            ("name", "name"),
            ("project_id", "project_id"),
            ("tenant_id", "tenant_id"),
            ("id", "id"),
            ("owner_id", "owner_id"),
            ("archived", "archived"),
        ]
        options = [
            (a, b)
            for a, b in pairs
            if a in inner.cols and b in outer.cols and inner.cols[a][1] == outer.cols[b][1]
        ]
        if keyed:
            options = [(a, b) for a, b in options if a == "id"]
        if (
            not keyed
            and inner.model is self.schema.task
            and outer.model is self.schema.project
            and "project_id" in inner.cols
        ):
            options += [("project_id", "id")] * 3  # the foreign key, mostly
        if (
            inner.model is self.schema.project
            and outer.model is self.schema.task
            and "project_id" in outer.cols
        ):
            options += [("id", "project_id")] * 3
        if not options:
            return None
        a, b = self.pick(options)
        return inner.col(a) == outer.col(b)

    def subquery_predicate(self, outer: list[Source], depth: int) -> Any:
        r = self.rng.random()
        src = self.pick(outer)
        if r < 0.25:
            return self.in_subquery(outer, src, depth)
        if r < 0.5:
            inner = self.new_entity(outer)
            correlation = self.link(inner, src)
            stmt = select(inner.col("id"))
            conditions = []
            if correlation is not None and self.chance(0.8):
                conditions.append(correlation)
                self.tag("exists[correlated]")
            else:
                self.tag("exists")
                stmt = stmt.correlate(None)
            if self.chance(0.7):
                conditions.append(self.predicate([inner], depth))
            expr = stmt.where(*conditions).exists()
            if self.chance(0.3):
                self.tag("not-exists")
                expr = ~expr
            return expr
        if r < 0.75:
            _name, col, t = self.pick(
                [c for c in self.named_columns([src]) if c[2] != BOOL] or [("id", None, INT)]
            )
            if col is None:
                return self.comparison(outer)
            op = self.pick(("eq", "ne", "gt", "le"))
            scalar = self.scalar_subquery(t, outer, depth)
            return {
                "eq": col == scalar,
                "ne": col != scalar,
                "gt": col > scalar,
                "le": col <= scalar,
            }[op]
        return self.relationship_predicate(outer, src, depth)

    def in_subquery(self, outer: list[Source], src: Source, depth: int) -> Any:
        candidates = [c for c in self.named_columns([src]) if c[2] != BOOL]
        if not candidates:
            return self.comparison(outer)
        _name, col, t = self.pick(candidates)
        if self.chance(0.2):
            self.tag("in_[union]")
            branches = [self.union_branch((t,), depth) for _ in range(2)]
            compound = (union if self.chance(0.5) else union_all)(*branches)
            return col.in_(compound)
        models = [m for m in self.models() if t in self.schema.columns[m].values()]
        inner = self.new_entity(outer, self.pick(models))
        inner_col = self.pick(inner.of_type(t))
        stmt = select(inner_col).correlate(None)
        if self.chance(0.75):
            stmt = stmt.where(self.predicate([inner], depth))
        self.tag(f"in_[{inner.label}]")
        expr = col.in_(stmt)
        if self.chance(0.2):
            self.tag("not-in")
            expr = ~expr
        return expr

    def scalar_subquery(self, type_: str, outer: list[Source], depth: int) -> Any:
        """A one-row subquery: an aggregate, or a project picked by its (per-tenant) name."""
        models = [m for m in self.models() if type_ in self.schema.columns[m].values()]
        inner = self.new_entity(outer, self.pick(models))
        cols = inner.of_type(type_)
        if inner.model is self.schema.project and self.chance(0.3):
            self.tag("scalar[project-by-name]")
            stmt = select(self.pick(cols)).where(inner.col("name") == self.pick(NAMES))
            return stmt.correlate(None).scalar_subquery()
        if type_ == INT and self.chance(0.35):
            agg = func.count(inner.col("id"))
            self.tag(f"scalar[count {inner.label}]")
        else:
            fn = self.pick(("max", "min"))
            agg = getattr(func, fn)(self.pick(cols))
            self.tag(f"scalar[{fn} {inner.label}]")
        stmt = select(agg)
        conditions = []
        candidates = [s for s in outer if s.model is not None or s.cols]
        if candidates and self.chance(0.4):
            correlation = self.link(inner, self.pick(candidates))
            if correlation is not None:
                conditions.append(correlation)
                self.tag("correlated")
        if not conditions:
            stmt = stmt.correlate(None)
        if self.chance(0.6):
            conditions.append(self.predicate([inner], depth + 1))
        return stmt.where(*conditions).scalar_subquery()

    def relationship_predicate(self, outer: list[Source], src: Source, depth: int) -> Any:
        entity = src.obj
        if src.model is self.schema.task and self.written is not self.schema.project:
            self.tag("has()")
            if self.chance(0.3):
                return entity.project.has()
            target = self.entity(self.schema.project, alias=False)
            return entity.project.has(self.predicate([target], depth + 1))
        if src.model is self.schema.project and self.written is not self.schema.task:
            if self.chance(0.25):
                self.tag("open_tasks.any()")
                return entity.open_tasks.any()
            self.tag("any()")
            if self.chance(0.25):
                return entity.tasks.any()
            target = self.entity(self.schema.task, alias=False)
            return entity.tasks.any(self.predicate([target], depth + 1))
        return self.in_subquery(outer, src, depth)

    def expression(self, srcs: list[Source], depth: int) -> tuple[Any, str]:
        """A column expression of the select list, and its type."""
        src = self.pick(srcs)
        _name, (col, t) = self.pick(src.cols.items())
        r = self.rng.random()
        if r < 0.45:
            return col, t
        if r < 0.55 and src.model is self.schema.project and src.plain and depth == 0:
            self.tag("task_count")
            return src.obj.task_count, INT
        if r < 0.65:
            self.tag("scalar-column")
            type_ = self.pick((INT, STR))
            return self.scalar_subquery(type_, srcs, depth + 1), type_
        if r < 0.75:
            self.tag("case")
            return case((self.predicate(srcs, 2), "yes"), else_="no"), STR
        if t == STR:
            self.tag("str-func")
            fn = self.pick(("lower", "upper", "length", "concat", "coalesce"))
            if fn == "length":
                return func.length(col), INT
            if fn == "concat":
                return col + "-x", STR
            if fn == "coalesce":
                return func.coalesce(col, "none"), STR
            return getattr(func, fn)(col), STR
        if t == INT:
            self.tag("arith")
            fn = self.pick(("plus", "times", "minus", "coalesce"))
            if fn == "plus":
                return col + self.rng.randint(1, 5), INT
            if fn == "times":
                return col * 2, INT
            if fn == "minus":
                return col - self.rng.randint(1, 5), INT
            return func.coalesce(col, 0), INT
        self.tag("case")
        return case((col == true(), "yes"), else_="no"), STR

    # ----------------------------------------------------------------------------------------
    # Reads

    def read(self) -> Generated:
        if self.chance(0.18):
            return self.union_read()
        stmt, ordered = self.select(0)
        return self._done(stmt, write=False, ordered=ordered)

    def source(self, outer: list[Source], depth: int) -> Source:
        if depth < 1 and self.chance(0.2):
            return self.derived(outer, depth)
        return self.new_entity(outer)

    def select(self, depth: int) -> tuple[Any, bool]:
        base = self.source([], depth)
        srcs = [base]
        joins: list[tuple[Source, Any, bool, bool]] = []
        for _ in range(self.pick((0, 0, 1, 1, 1, 2))):
            target = self.source(srcs, depth)
            left = self.pick(srcs)
            onclause = self.join_condition(left, target, srcs)
            if onclause is None:
                continue
            full = self.caps.full_join and self.chance(0.04)
            outer = full or self.chance(0.35)
            self.tag("full-join" if full else "outer-join" if outer else "join")
            joins.append((target, onclause, outer, full))
            srcs.append(target)

        style = self.rng.random()
        entities = [s for s in srcs if s.model is not None]
        order: list[Any] = []
        grouped = False
        if style < 0.3 and entities:
            chosen = self.rng.sample(entities, self.rng.randint(1, min(2, len(entities))))
            columns: list[Any] = [s.obj for s in chosen]
            order = [s.col("id") for s in chosen]
            self.tag("select[entity]")
            if self.chance(0.2):
                expr, _ = self.expression(srcs, depth)
                columns.append(expr.label("c0"))
                order.append(columns[-1])
        elif style < 0.7:
            columns = [
                self.expression(srcs, depth)[0].label(f"c{i}")
                for i in range(self.rng.randint(1, 3))
            ]
            order = list(columns)
            self.tag("select[columns]")
        else:
            grouped = True
            group = [
                self.pick(self.named_columns(srcs))[1].label(f"g{i}")
                for i in range(self.pick((0, 1, 1, 2)))
            ]
            aggs = [self.aggregate(srcs).label(f"a{i}") for i in range(self.rng.randint(1, 2))]
            columns = [*group, *aggs]
            order = list(columns)
            self.tag("aggregate" + ("+group_by" if group else ""))

        stmt = select(*columns).select_from(base.obj)
        for target, onclause, outer, full in joins:
            if target.model is not None and _is_relationship(onclause):
                stmt = stmt.join(onclause, isouter=outer, full=full)  # names its own target
            else:
                stmt = stmt.join(target.obj, onclause, isouter=outer, full=full)
        if self.chance(0.75):
            stmt = stmt.where(self.predicate(srcs, depth))
        if grouped:
            keys = [c for c in columns if c.name.startswith("g")]
            if keys:
                stmt = stmt.group_by(*(c.element for c in keys))
            if self.chance(0.3):
                self.tag("having")
                stmt = stmt.having(func.count() > self.rng.randint(0, 2))
        elif self.chance(0.1):
            self.tag("distinct")
            stmt = stmt.distinct()
        ordered = False
        if self.chance(0.25):
            self.tag("order+limit")
            stmt = stmt.order_by(*order).limit(self.rng.randint(1, 4))
            if self.chance(0.3):
                stmt = stmt.offset(self.rng.randint(1, 2))
            ordered = True
        return stmt, ordered

    def join_condition(self, left: Source, target: Source, srcs: list[Source]) -> Any:
        if left.model in (self.schema.task, self.schema.project) and self.chance(0.3):
            rel = {self.schema.task: "project", self.schema.project: "tasks"}[left.model]
            wanted = self.schema.project if left.model is self.schema.task else self.schema.task
            if target.model is wanted:
                self.tag(f"join[{rel}]")
                attr = getattr(left.obj, rel)
                return attr if target.plain else attr.of_type(target.obj)
        onclause = self.link(target, left)
        if onclause is None:
            return None
        if self.chance(0.25):
            self.tag("on-and")
            onclause = and_(onclause, self.predicate([target], 2))
        return onclause

    def aggregate(self, srcs: list[Source]) -> Any:
        _name, col, t = self.pick(self.named_columns(srcs))
        r = self.rng.random()
        if r < 0.3 or t == BOOL:
            self.tag("count(*)")
            return func.count()
        if r < 0.5:
            self.tag("count(col)")
            return func.count(col)
        if r < 0.6:
            self.tag("count(distinct)")
            return func.count(distinct(col))
        if r < 0.8 or t == STR:
            fn = self.pick(("max", "min"))
            self.tag(fn)
            return getattr(func, fn)(col)
        self.tag("sum")
        return func.sum(col)

    def union_branch(self, signature: tuple[str, ...], depth: int) -> Any:
        model = self.pick(
            m for m in self.models() if all(t in self.schema.columns[m].values() for t in signature)
        )
        src = self.entity(model, alias=self.chance(0.3))
        cols = [self.pick(src.of_type(t)).label(f"v{i}") for i, t in enumerate(signature)]
        stmt = select(*cols).correlate(None)
        if self.chance(0.8):
            stmt = stmt.where(self.predicate([src], depth + 1))
        return stmt

    def union_read(self) -> Generated:
        signature = self.pick(((STR,), (INT,), (INT, STR), (STR, STR)))
        branches = [self.union_branch(signature, 1) for _ in range(self.rng.randint(2, 3))]
        ops: list[tuple[str, Callable[..., Any]]] = [
            ("union", union),
            ("union_all", union_all),
            ("union", union),
            ("union_all", union_all),
            ("intersect", intersect),
            ("except", except_),
        ]
        name, op = self.pick(ops)
        compound = op(*branches)
        if self.chance(0.5):
            self.tag(name)
            return self._done(compound, write=False)
        sub = compound.subquery(self.fresh("u"))
        self.tag(f"{name}.subquery")
        src = Source(
            sub, None, {f"v{i}": (sub.c[f"v{i}"], t) for i, t in enumerate(signature)}, "u"
        )
        if self.chance(0.4):
            stmt = select(func.count()).select_from(sub)
        else:
            stmt = select(*(c for c, _ in src.cols.values()))
        if self.chance(0.6):
            stmt = stmt.where(self.comparison([src]))
        return self._done(stmt, write=False)

    # ----------------------------------------------------------------------------------------
    # Writes

    def write(self) -> Generated:
        r = self.rng.random()
        if r < 0.38:
            return self.insert()
        if r < 0.75:
            return self.update()
        return self.delete()

    def model_for_write(self) -> Any:
        return self.rng.choices(self.schema.models, weights=(3, 4, 2))[0]

    def new_id(self) -> int:
        value = EXPLICIT_ID_BASE + self.rng.randrange(1000) * 10 + len(self.explicit_ids)
        self.explicit_ids.add(value)
        return value

    def value_for(self, model: Any, name: str, srcs: list[Source], *, inserting: bool) -> Any:
        t = self.schema.columns[model][name]
        r = self.rng.random()
        if name in self.schema.policy_columns:
            return self.policy_value(srcs, inserting=inserting)
        if name in self.schema.literals:
            self.tag(f"sets-{name.removesuffix('_id')}")
            return self.pick(self.schema.literals[name])
        if name == "project_id":
            if r < 0.15:
                return None
            if r < 0.45:
                return self.pick(self.schema.own_projects)
            if r < 0.6:
                self.tag("fk-other-tenant")
                return self.pick(self.schema.other_projects)
            self.tag("fk-scalar")
            return self.scalar_subquery(INT, [], 1) if self.chance(0.5) else self.project_id()
        if t == BOOL:
            return self.pick((True, False))
        # names
        if r < 0.3:
            return self.fresh("new-")
        if r < 0.55:
            return self.pick(NAMES)
        if r < 0.8:
            self.tag("value-scalar")
            scalar = self.scalar_subquery(STR, srcs, 1)
            return func.coalesce(scalar, "none") if self.chance(0.4) else scalar
        if not inserting and srcs:
            self.tag("value-expr")
            return self.pick((func.upper, func.lower))(srcs[0].col(name))
        return self.fresh("new-")

    def policy_value(self, srcs: list[Source], *, inserting: bool) -> Any:
        """A value of a column a row policy reads: a literal or SQL constant (the policy's,
        mostly), or, in an UPDATE, a test on the written row's columns."""
        self.tag("sets-policy")
        r = self.rng.random()
        if r < 0.7 or inserting or not srcs:
            return self.pick((False, True, True, True, false(), true()))
        self.tag("policy-expr")
        if r < 0.8:
            return self.comparison(srcs[:1])
        return self.pick(srcs[0].of_type(BOOL))

    def project_id(self) -> Any:
        target = self.entity(self.schema.project, alias=self.chance(0.5))
        self.tag("scalar[project-by-name]")
        return (
            select(target.col("id"))
            .where(target.col("name") == self.pick(NAMES))
            .correlate(None)
            .scalar_subquery()
        )

    def returning(self, stmt: Any, src: Source, *, autoincrement: bool) -> tuple[Any, bool]:
        self.tag("returning")
        if autoincrement:
            cols = [c for n, (c, _) in src.cols.items() if n != "id"]
            return stmt.returning(*self.rng.sample(cols, self.rng.randint(1, len(cols)))), True
        if self.chance(0.5):
            return stmt.returning(src.obj), True
        cols = [c for c, _ in src.cols.values()]
        return stmt.returning(*self.rng.sample(cols, self.rng.randint(1, len(cols)))), True

    def insert(self) -> Generated:
        model = self.model_for_write()
        target = self.entity(model, alias=False)
        self.tag(f"insert[{model.__name__}]")
        settable = [
            n for n in self.schema.columns[model] if n not in ("id", *self.schema.guarded_columns)
        ]
        r = self.rng.random()
        explicit = self.chance(0.5)
        if r < 0.2 or (model is self.schema.plan and r < 0.4):
            # INSERT ... FROM SELECT
            self.tag("from_select")
            columns = ["name"]
            src = self.new_entity([], self.pick(self.schema.models))
            if self.chance(0.3):
                sub = self.derived([], 1)
                src = sub if "name" in sub.cols else src
            stmt = select(src.col("name"))
            if model is self.schema.task and "id" in src.cols:
                columns.append("project_id")
                stmt = stmt.add_columns(self.pick(src.of_type(INT)))
            if model is not self.schema.plan and self.chance(0.3):
                columns.append("tenant_id")
                stmt = stmt.add_columns(src.cols.get("tenant_id", (src.col("name"), STR))[0])
            for name in self.schema.row_scope_columns:
                if name in self.schema.columns[model] and self.chance(0.3):
                    columns.append(name)
                    stmt = stmt.add_columns(src.cols.get(name, (src.col("name"), STR))[0])
            if self.chance(0.8):
                stmt = stmt.where(self.predicate([src], 1))
            made = insert(model).from_select(columns, stmt)
            explicit = False
        else:
            rows = []
            count = 1 if r < 0.75 else self.rng.randint(2, 3)
            if count > 1:
                self.tag("multi-values")
            keys = [n for n in settable if self.chance(0.8) or n == "name"]
            with_tenant = self.chance(0.12) and model is not self.schema.plan
            with_row_scopes = [
                name
                for name in self.schema.row_scope_columns
                if name in self.schema.columns[model] and self.chance(0.12)
            ]
            with_row_scopes += [
                name
                for name in self.schema.policy_columns
                if name in self.schema.columns[model] and self.chance(0.3)
            ]
            for _ in range(count):
                row = {n: self.value_for(model, n, [], inserting=True) for n in keys}
                if with_tenant:
                    row["tenant_id"] = self.value_for(model, "tenant_id", [], inserting=True)
                for name in with_row_scopes:
                    row[name] = self.value_for(model, name, [], inserting=True)
                if explicit:
                    row["id"] = self.taken_id(model) if self.chance(0.06) else self.new_id()
                rows.append(row)
            made = insert(model).values(rows if count > 1 else rows[0])
        returning = False
        if self.caps.insert_returning and self.chance(0.3):
            made, returning = self.returning(made, target, autoincrement=not explicit)
        return self._done(made, write=True, returning=returning)

    def taken_id(self, model: Any) -> int:
        """An id the seed already uses (acme's or globex's): a primary-key collision."""
        self.tag("id-collision")
        return self.rng.randint(1, 4)

    def update(self) -> Generated:
        model = self.model_for_write()
        target = self.entity(model, alias=False)
        self.tag(f"update[{model.__name__}]")
        if not self.caps.self_referencing_writes:
            self.written = model
        srcs = [target]
        conditions = []
        options: dict[str, Any] = {}
        other = None
        keyed = self.chance(0.6)
        if self.chance(0.2):
            # UPDATE ... FROM another model, whose column may give the value. Only when each
            # row meets one row of the other (a join on its key): otherwise the database picks
            # any of the matching rows, and two databases may pick differently.
            other = self.entity(self.pick(self.models()), alias=True)
            correlation = self.link(other, target, keyed=keyed)
            if correlation is not None:
                self.tag(f"update-from[{other.model.__name__}]")
                options["is_update_from"] = True
                conditions.append(correlation)
                srcs.append(other)
            else:
                other = None
        settable = [n for n in self.schema.columns[model] if n != "id" and self.updates(n)]
        keys = self.rng.sample(settable, self.rng.randint(1, min(2, len(settable))))
        values = {}
        for key in keys:
            if other is not None and keyed and key in other.cols and self.chance(0.6):
                self.tag("value-from-other")
                values[key] = other.col(key)
            elif self.schema.columns[model][key] == BOOL and self.chance(0.4):
                values[key] = not_(target.col(key))
            else:
                value_srcs = srcs if keyed else [target]
                values[key] = self.value_for(model, key, value_srcs, inserting=False)
        if self.chance(0.85):
            conditions.append(self.predicate(srcs, 1))
        stmt = update(model).values(values)
        if conditions:
            stmt = stmt.where(*conditions)
        if self.chance(0.3):
            options["synchronize_session"] = False
        if options:
            stmt = stmt.execution_options(**options)
        returning = False
        if self.caps.update_returning and self.chance(0.3):
            stmt, returning = self.returning(stmt, target, autoincrement=False)
        return self._done(stmt, write=True, returning=returning)

    def updates(self, name: str) -> bool:
        """Whether an UPDATE may set a column: a scoping one rarely, a policy's sometimes."""
        if name in self.schema.policy_columns:
            return self.chance(0.5)
        return name not in self.schema.scope_columns or self.chance(0.1)

    def delete(self) -> Generated:
        model = self.rng.choices(self.schema.models, weights=(2, 5, 3))[0]
        target = self.entity(model, alias=False)
        self.tag(f"delete[{model.__name__}]")
        if not self.caps.self_referencing_writes:
            self.written = model
        srcs = [target]
        conditions = []
        options: dict[str, Any] = {}
        if self.caps.delete_using and self.chance(0.12):
            other = self.entity(self.pick(self.models()), alias=True)
            correlation = self.link(other, target)
            if correlation is not None:
                self.tag(f"delete-using[{other.model.__name__}]")
                options["is_delete_using"] = True
                conditions.append(correlation)
                srcs.append(other)
        if self.chance(0.92):
            conditions.append(self.predicate(srcs, 1))
        stmt = delete(model)
        if conditions:
            stmt = stmt.where(*conditions)
        if self.chance(0.3):
            options["synchronize_session"] = False
        if options:
            stmt = stmt.execution_options(**options)
        returning = False
        if self.caps.delete_returning and self.chance(0.3):
            stmt, returning = self.returning(stmt, target, autoincrement=False)
        return self._done(stmt, write=True, returning=returning)


def _is_relationship(onclause: Any) -> bool:
    prop = getattr(onclause, "property", None)
    return prop is not None and hasattr(prop, "direction")


def generate(
    seed: int, index: int, caps: Capabilities, schema: Schema = TENANT_SCHEMA
) -> Generated:
    """Statement ``index`` of the run with ``seed`` over ``schema``: each has a generator of its
    own, so any one of them can be rebuilt from the two numbers."""
    return Grammar(random.Random(f"{seed}:{index}"), caps, schema).statement()
