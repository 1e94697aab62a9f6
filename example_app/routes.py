"""The HTTP API. Every tenant route takes a :data:`~fastapi_tenancy.TenantSession`, so it sees
only the bound tenant's rows; none of them filters by tenant itself.

A row of another tenant is invisible to the scoped session, so it answers 404 exactly like a
missing row: the API never tells one tenant what ids another tenant has. Private notes are
scoped by their owner too (:func:`~fastapi_tenancy.owner_field`): another user's note answers
404 the same way, and only ``GET /team/notes``, the tenant admins' audited switch, lifts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from fastapi_tenancy import (
    AdminSession,
    GlobalSession,
    NotAMember,
    Tenancy,
    TenantSession,
    admin_session,
    get_tenant_context,
    lifted_session,
)
from fastapi_tenancy.tenants import Tenants

from .auth import (
    CurrentPrincipal,
    PasswordHasher,
    TokenIssuer,
    current_principal,
    tenant_admin_check,
)
from .errors import DatabaseNotReady, InvalidCredentials, NotFound
from .health import database_answers
from .lifecycle import Founder, offboard, sign_up
from .models import Membership, Plan, PrivateNote, Project, Task, Tenant, User
from .schemas import (
    LoginRequest,
    MembershipOut,
    MeOut,
    NoteCreate,
    NoteOut,
    NoteUpdate,
    OffboardOut,
    PlanOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    SignupOut,
    SignupRequest,
    StatsOut,
    TaskCreate,
    TaskOut,
    TenantOut,
    TokenOut,
)

__all__ = ["Services", "admin_router", "public_router", "team_router", "tenant_router"]

MAX_ID = 2**31 - 1
MAX_PAGE = 100

admin_logger = logging.getLogger("example_app.admin")


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes need besides the kit's dependencies: the engine, the token issuer, the
    hasher, and the tenancy's tenant operations (``tenancy.tenants``)."""

    engine: Engine
    tokens: TokenIssuer
    passwords: PasswordHasher
    tenants: Tenants[Any]


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip.")] = 0,
) -> Page:
    """``?limit=&offset=`` on list routes; the total travels in ``X-Total-Count``."""
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(page)]
ProjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
NoteId = Annotated[int, Path(ge=1, le=MAX_ID)]


public_router = APIRouter()
tenant_router = APIRouter(dependencies=[Depends(current_principal)])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


# -- public ----------------------------------------------------------------------------------


@public_router.get("/", tags=["meta"])
def index() -> dict[str, str]:
    """Where to start."""
    return {"name": "example_app", "docs": "/docs", "login": "POST /auth/login"}


@public_router.get("/healthz", tags=["meta"])
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves; it never waits on the database or a thread."""
    return {"status": "ok"}


@public_router.get("/readyz", tags=["meta"])
async def readyz(services: ServicesDep) -> dict[str, str]:
    """Readiness: 200 when the database answers ``SELECT 1`` within two seconds, else 503
    ``database_unavailable`` once they have passed; no token and no tenant needed."""
    if not await database_answers(services.engine):
        raise DatabaseNotReady()
    return {"status": "ok"}


@public_router.get("/plans", tags=["meta"])
def list_plans(session: GlobalSession) -> list[PlanOut]:
    """The subscription plans: shared reference data, no token and no tenant needed."""
    plans = session.exec(select(Plan).order_by(col(Plan.monthly_price_cents))).all()
    return [PlanOut.of(plan) for plan in plans]


@dataclass(frozen=True, slots=True)
class _Account:
    email: str
    password_hash: str
    is_platform_admin: bool
    tenants: tuple[str, ...]


def _find_account(engine: Engine, email: str) -> _Account | None:
    """The user and their tenants, in one query whether or not the email exists."""
    with Session(engine) as session:
        rows = session.exec(
            select(User.email, User.password_hash, User.is_platform_admin, Membership.tenant_id)
            .outerjoin(Membership, col(Membership.user_id) == col(User.id))
            .where(col(User.email) == email)
            .order_by(col(Membership.tenant_id))
        ).all()
    if not rows:
        return None
    found, password_hash, is_admin, _ = rows[0]
    tenants = tuple(tenant for *_, tenant in rows if tenant is not None)
    return _Account(found, password_hash, is_admin, tenants)


@public_router.post("/auth/login", tags=["auth"])
async def login(body: LoginRequest, services: ServicesDep) -> TokenOut:
    """Trade an email and password for a bearer token.

    The token names the user's tenant when they have exactly one, or the one given as
    ``tenant``; otherwise it names none, and each request chooses one of the user's tenants by
    subdomain or ``X-Tenant-ID``. 503 ``login_busy`` (with ``Retry-After``) while too many
    logins are hashing passwords at once.
    """
    # The account is read, and its connection given back, before the hash: a login waiting
    # for a hashing slot holds no connection and no thread.
    account = await anyio.to_thread.run_sync(_find_account, services.engine, body.email.lower())
    # An unknown email costs one hash too, so the answer takes as long as for a wrong password.
    stored = None if account is None else account.password_hash
    valid = await services.passwords.check(body.password, stored)
    if account is None or not valid:
        raise InvalidCredentials()
    if body.tenant is not None:
        if body.tenant not in account.tenants:
            raise NotAMember()
        tenant: str | None = body.tenant
    else:
        tenant = account.tenants[0] if len(account.tenants) == 1 else None
    roles = ["admin"] if account.is_platform_admin else []
    return TokenOut(access_token=services.tokens.issue(account.email, tenant=tenant, roles=roles))


@public_router.post("/signup", status_code=status.HTTP_201_CREATED, tags=["auth"])
async def signup(body: SignupRequest, services: ServicesDep) -> SignupOut:
    """Create a tenant and its first user, its ``owner``, and log that user in.

    All or nothing: ``409 tenant_exists`` (slug taken), ``400 invalid_tenant_key`` (slug outside
    the key pattern), ``422 unknown_plan``, ``409 email_taken`` (an account has this email; log
    in with it instead), ``403 tenant_limit_reached`` (``EXAMPLE_MAX_TENANTS``) and ``503
    signup_busy`` (``Retry-After``) leave no tenant, no user and no membership behind. The
    token names the new tenant.
    """
    # Hashed before the transaction, in the slots logins use: no transaction waits on a hash.
    founder = Founder(
        email=body.email,
        name=body.user_name,
        password_hash=await services.passwords.make_hash(body.password),
    )
    tenant = await anyio.to_thread.run_sync(
        partial(
            sign_up, services.tenants, body.tenant, name=body.name, plan=body.plan, founder=founder
        )
    )
    token = services.tokens.issue(founder.email, tenant=tenant.slug, roles=[])
    return SignupOut(access_token=token, tenant=TenantOut.of(tenant), email=founder.email)


# -- the user ----------------------------------------------------------------------------------


@tenant_router.get("/me", tags=["auth"])
def me(principal: CurrentPrincipal, services: ServicesDep) -> MeOut:
    """The user, the bound tenant (if any) and the roles; works with or without a tenant."""
    # A plain session for the identity tables (no tenant data), closed before the answer is
    # serialized in a worker thread: a connection held across that wait is how sync routes
    # deadlock under load (the kit's own sessions take a slot of the engine instead).
    with Session(services.engine) as session:
        user = session.exec(select(User).where(col(User.email) == principal.email)).first()
        if user is None:
            raise NotFound("This account no longer exists.")
        rows = session.exec(
            select(Membership.tenant_id, Tenant.name, Membership.role)
            .join(Tenant, col(Tenant.slug) == col(Membership.tenant_id))
            .where(col(Membership.user_id) == user.id)
            .order_by(col(Membership.tenant_id))
        ).all()
    context = get_tenant_context()
    return MeOut(
        email=user.email,
        name=user.name,
        roles=list(principal.roles),
        tenant=principal.tenant,
        tenant_source=None if context is None or context.id is None else context.source,
        memberships=[MembershipOut(tenant=slug, name=name, role=role) for slug, name, role in rows],
    )


# -- projects and tasks ------------------------------------------------------------------------

PROJECT_NOT_FOUND = "Project not found."


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(PROJECT_NOT_FOUND)
    return project


def _count(session: Session, column: Any) -> int:
    return session.exec(select(func.count(column))).one()


@tenant_router.get("/projects", tags=["projects"])
def list_projects(session: TenantSession, page: PageDep, response: Response) -> list[ProjectOut]:
    """The bound tenant's projects, oldest first."""
    response.headers["X-Total-Count"] = str(_count(session, col(Project.id)))
    projects = session.exec(
        select(Project).order_by(col(Project.id)).offset(page.offset).limit(page.limit)
    ).all()
    return [ProjectOut.of(project) for project in projects]


@tenant_router.post("/projects", status_code=status.HTTP_201_CREATED, tags=["projects"])
def create_project(body: ProjectCreate, session: TenantSession, response: Response) -> ProjectOut:
    """Create a project in the bound tenant; 409 if the tenant already has one of that name."""
    project = Project(name=body.name)
    if body.tenant_id is not None:
        project.tenant_id = body.tenant_id  # the kit refuses another tenant's id
    session.add(project)
    session.commit()
    response.headers["Location"] = f"/projects/{project.id}"
    return ProjectOut.of(project)


@tenant_router.get("/projects/{project_id}", tags=["projects"])
def get_project(project_id: ProjectId, session: TenantSession) -> ProjectOut:
    """One project of the bound tenant."""
    return ProjectOut.of(_project(session, project_id))


@tenant_router.patch("/projects/{project_id}", tags=["projects"])
def update_project(
    project_id: ProjectId, body: ProjectUpdate, session: TenantSession
) -> ProjectOut:
    """Rename a project; a ``tenant_id`` other than the bound tenant's is refused (403)."""
    project = _project(session, project_id)
    if body.name is not None:
        project.name = body.name
    if body.tenant_id is not None:
        project.tenant_id = body.tenant_id  # the kit refuses moving a row between tenants
    session.commit()
    return ProjectOut.of(project)


@tenant_router.delete(
    "/projects/{project_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["projects"]
)
def delete_project(project_id: ProjectId, session: TenantSession) -> Response:
    """Delete a project and its tasks."""
    project = _project(session, project_id)
    session.exec(delete(Task).where(col(Task.project_id) == project.id))
    session.delete(project)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@tenant_router.get("/projects/{project_id}/tasks", tags=["tasks"])
def list_tasks(
    project_id: ProjectId, session: TenantSession, page: PageDep, response: Response
) -> list[TaskOut]:
    """The tasks of one of the bound tenant's projects."""
    project = _project(session, project_id)
    in_project = col(Task.project_id) == project.id
    total = session.exec(select(func.count(col(Task.id))).where(in_project)).one()
    response.headers["X-Total-Count"] = str(total)
    tasks = session.exec(
        select(Task).where(in_project).order_by(col(Task.id)).offset(page.offset).limit(page.limit)
    ).all()
    return [TaskOut.of(task) for task in tasks]


@tenant_router.post(
    "/projects/{project_id}/tasks", status_code=status.HTTP_201_CREATED, tags=["tasks"]
)
def create_task(project_id: ProjectId, body: TaskCreate, session: TenantSession) -> TaskOut:
    """Add a task to one of the bound tenant's projects."""
    project = _project(session, project_id)
    task = Task(project_id=project.id or 0, name=body.name, done=body.done)
    if body.tenant_id is not None:
        task.tenant_id = body.tenant_id  # the kit refuses another tenant's id
    session.add(task)
    session.commit()  # a project deleted since it was read above: 409 write_conflict
    return TaskOut.of(task)


@tenant_router.get("/stats", tags=["projects"])
def stats(session: TenantSession) -> StatsOut:
    """How many projects and tasks the bound tenant has."""
    return StatsOut(projects=_count(session, col(Project.id)), tasks=_count(session, col(Task.id)))


# -- private notes -----------------------------------------------------------------------------

NOTE_NOT_FOUND = "Note not found."


def _note(session: Session, note_id: int) -> PrivateNote:
    note = session.get(PrivateNote, note_id)  # another user's note: None, as a missing one
    if note is None:
        raise NotFound(NOTE_NOT_FOUND)
    return note


def _list_notes(session: Session, page: Page, response: Response) -> list[NoteOut]:
    response.headers["X-Total-Count"] = str(_count(session, col(PrivateNote.id)))
    notes = session.exec(
        select(PrivateNote).order_by(col(PrivateNote.id)).offset(page.offset).limit(page.limit)
    ).all()
    return [NoteOut.of(note) for note in notes]


@tenant_router.get("/notes", tags=["notes"])
def list_notes(session: TenantSession, page: PageDep, response: Response) -> list[NoteOut]:
    """The caller's own notes in the bound tenant, oldest first; nobody else's."""
    return _list_notes(session, page, response)


@tenant_router.post("/notes", status_code=status.HTTP_201_CREATED, tags=["notes"])
def create_note(body: NoteCreate, session: TenantSession, response: Response) -> NoteOut:
    """Write a note in the bound tenant; the kit makes the caller its owner. An ``owner_id``
    or ``tenant_id`` other than the caller's is refused (403), nothing written."""
    note = PrivateNote(title=body.title, body=body.body)  # owner_id: stamped by the kit
    if body.owner_id is not None:
        note.owner_id = body.owner_id  # the kit refuses another owner (cross_scope_write)
    if body.tenant_id is not None:
        note.tenant_id = body.tenant_id  # the kit refuses another tenant's id
    session.add(note)
    session.commit()
    response.headers["Location"] = f"/notes/{note.id}"
    return NoteOut.of(note)


@tenant_router.get("/notes/{note_id}", tags=["notes"])
def get_note(note_id: NoteId, session: TenantSession) -> NoteOut:
    """One of the caller's notes; another user's answers 404, exactly like a missing id."""
    return NoteOut.of(_note(session, note_id))


@tenant_router.patch("/notes/{note_id}", tags=["notes"])
def update_note(note_id: NoteId, body: NoteUpdate, session: TenantSession) -> NoteOut:
    """Change one of the caller's notes; giving it to another owner or tenant is refused (403)."""
    note = _note(session, note_id)
    if body.title is not None:
        note.title = body.title
    if body.body is not None:
        note.body = body.body
    if body.owner_id is not None:
        note.owner_id = body.owner_id  # the kit refuses moving a row to another owner
    if body.tenant_id is not None:
        note.tenant_id = body.tenant_id  # the kit refuses moving a row between tenants
    session.commit()
    return NoteOut.of(note)


@tenant_router.delete("/notes/{note_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["notes"])
def delete_note(note_id: NoteId, session: TenantSession) -> Response:
    """Delete one of the caller's notes."""
    session.delete(_note(session, note_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def team_router(engine: Engine) -> APIRouter:
    """``GET /team/notes``: the tenant admins' switch. Made per app, since its predicate
    (:func:`~example_app.auth.tenant_admin_check`) reads the memberships of the app's engine."""
    router = APIRouter(dependencies=[Depends(current_principal)])
    every_owner = lifted_session("owner", allow=tenant_admin_check(engine))

    @router.get("/team/notes", tags=["notes"])
    def team_notes(
        page: PageDep, response: Response, session: Session = Depends(every_owner)
    ) -> list[NoteOut]:
        """Every note of the bound tenant, whoever wrote it: for the tenant's admins (the
        ``owner`` role of their membership), 403 ``admin_required`` to other members; each
        use is audited by the kit. Never another tenant's notes."""
        return _list_notes(session, page, response)

    return router


# -- platform admin ----------------------------------------------------------------------------


@admin_router.get("/projects")
def all_projects(
    principal: CurrentPrincipal,
    session: AdminSession,
    page: PageDep,
    response: Response,
    request: Request,
) -> list[ProjectOut]:
    """Every tenant's projects: platform admins only (403 otherwise), audited by the kit.

    The admin session reads the shared tables; each tenant in a schema of its own is read
    through a session of its own, and the pages are cut from the merged order."""
    ordered = select(Project).order_by(col(Project.tenant_id), col(Project.id))
    window = ordered.limit(page.offset + page.limit)
    total = _count(session, col(Project.id))
    projects = list(session.exec(window))
    tenancy: Tenancy = request.app.state.tenancy
    for slug in request.app.state.schema_tenants:
        with tenancy.session(tenant=slug) as own:
            total += _count(own, col(Project.id))
            projects += own.exec(window)
    response.headers["X-Total-Count"] = str(total)
    projects.sort(key=lambda project: (project.tenant_id, project.id or 0))
    return [ProjectOut.of(p) for p in projects[page.offset : page.offset + page.limit]]


Slug = Annotated[str, Path(description="The tenant's slug.")]
AdminOnly = [Depends(admin_session)]
"""For admin routes that need no session of their own: the kit's admin check and audit line."""


@admin_router.get("/tenants")
def all_tenants(
    principal: CurrentPrincipal, session: AdminSession, page: PageDep, response: Response
) -> list[TenantOut]:
    """Every tenant, active and suspended, by slug: platform admins only, audited."""
    response.headers["X-Total-Count"] = str(_count(session, col(Tenant.id)))
    tenants = session.exec(
        select(Tenant).order_by(col(Tenant.slug)).offset(page.offset).limit(page.limit)
    ).all()
    return [TenantOut.of(tenant) for tenant in tenants]


@admin_router.post("/tenants/{slug}/suspend", dependencies=AdminOnly)
def suspend_tenant(slug: Slug, principal: CurrentPrincipal, services: ServicesDep) -> TenantOut:
    """Switch a tenant off: its requests answer ``403 tenant_inactive`` from now on; its
    data stays. Platform admins only, audited; ``404 tenant_not_found`` for an unknown slug."""
    tenant: Tenant = services.tenants.suspend(slug)
    admin_logger.warning("tenant %s suspended by %s", tenant.slug, principal.email)
    return TenantOut.of(tenant)


@admin_router.post("/tenants/{slug}/resume", dependencies=AdminOnly)
def resume_tenant(slug: Slug, principal: CurrentPrincipal, services: ServicesDep) -> TenantOut:
    """Switch a suspended tenant back on. Platform admins only, audited."""
    tenant: Tenant = services.tenants.resume(slug)
    admin_logger.warning("tenant %s resumed by %s", tenant.slug, principal.email)
    return TenantOut.of(tenant)


@admin_router.delete("/tenants/{slug}")
def offboard_tenant(
    slug: Slug,
    principal: CurrentPrincipal,
    session: AdminSession,
    services: ServicesDep,
    dry_run: Annotated[bool, Query(description="Count what would go; change nothing.")] = False,
) -> OffboardOut:
    """Offboard a tenant: suspend it, then delete every row of its projects and tasks, its
    memberships and the tenant, in one transaction; answers the rows deleted per table. Users
    stay (an account may belong to other tenants).

    ``?dry_run=true`` counts and changes nothing. Platform admins only, audited; ``404
    tenant_not_found`` for an unknown slug, ``409 tenant_active`` if another admin resumed the
    tenant meanwhile.
    """
    report = offboard(services.tenants, session, slug, dry_run=dry_run)
    if not dry_run:
        admin_logger.warning(
            "tenant %s offboarded by %s: %s rows deleted (%s)",
            report.tenant,
            principal.email,
            report.total,
            ", ".join(f"{table} {count}" for table, count in report.rows.items()),
        )
    return OffboardOut.of(report)
