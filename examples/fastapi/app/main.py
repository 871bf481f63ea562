"""Orders: a small asynchronous FastAPI service on PostgreSQL that hands its
background work to Spool.

POST /orders stores an order and enqueues one Spool task for it (the
idempotency key is the order id, so enqueueing twice yields one task).
Spool delivers the task back to POST /webhooks/spool, signed by the
Standard Webhooks scheme; the handler verifies the signature and does the
work ("process the order") in one transaction with the insertion of the
delivery's webhook-id into a table whose primary key refuses a second one:
at-least-once delivery becomes exactly-once processing.

Configuration comes from the environment only; every secret can be given
as a file (NAME_FILE), as Docker and Kubernetes secrets are mounted:

  DATABASE_URL[_FILE]        PostgreSQL URL (asyncpg)            required
  SPOOL_URL                  Spool's API                         http://127.0.0.1:8000
  SPOOL_API_KEY[_FILE]       bearer key for Spool's API          none (loopback Spool)
  SPOOL_SIGNING_KEYS[_FILE]  whsec_ keys, comma- or line-separated required
  ORDERS_WEBHOOK_URL         where Spool delivers (this app)     http://127.0.0.1:8080/webhooks/spool
  ORDERS_QUEUE               Spool queue                         orders
  ORDERS_DB_SCHEMA           schema of the app's tables          orders_app
  WEBHOOK_TOLERANCE_SECONDS  timestamp tolerance                 300
  ORDERS_FAIL_FIRST          answer 503 to the first N deliveries of
                             every order (each order may also ask
                             with "fail_times")                  0
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Optional

import asyncpg
import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .signature import DEFAULT_TOLERANCE_SECONDS, VerificationError, parse_keys, verify

# The app's own logger, on stderr beside uvicorn's; not the root logger,
# which would print uvicorn's messages a second time.
log = logging.getLogger("orders")
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s:     orders: %(message)s"))
log.addHandler(_handler)
log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
log.propagate = False

MAX_BODY = 1 << 20  # deliveries are small; anything larger is refused unread


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    """NAME, or the content of the file NAME_FILE names (secrets)."""
    path = os.environ.get(name + "_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _first_key(text: str) -> str:
    """The first API key of a key list as Spool reads one (SPOOL_API_KEYS:
    comma-separated or one per line, # comments, an optional ":role"
    suffix), so Spool's own key file or Secret can be mounted as is."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key = line.split(",")[0].strip()
            name, sep, role = key.rpartition(":")
            return name if sep and role in ("read", "write", "admin") else key
    return ""


@dataclass(frozen=True)
class Settings:
    database_url: str
    spool_url: str
    spool_api_key: str
    signing_keys: list
    webhook_url: str
    queue: str
    schema: str
    tolerance: int
    fail_first: int

    @classmethod
    def from_env(cls) -> "Settings":
        dsn = _env("DATABASE_URL")
        if not dsn:
            raise SystemExit("DATABASE_URL (or DATABASE_URL_FILE) is required")
        keys_text = _env("SPOOL_SIGNING_KEYS")
        if not keys_text:
            # No unsigned mode: a receiver that skips verification accepts
            # anything anyone posts to it.
            raise SystemExit("SPOOL_SIGNING_KEYS (or SPOOL_SIGNING_KEYS_FILE) is required")
        try:
            keys = parse_keys(keys_text)
        except ValueError as exc:
            raise SystemExit(f"SPOOL_SIGNING_KEYS: {exc}") from None
        if not keys:
            raise SystemExit("SPOOL_SIGNING_KEYS holds no key")
        schema = _env("ORDERS_DB_SCHEMA", "orders_app")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise SystemExit("ORDERS_DB_SCHEMA must be a lower-case SQL identifier")
        return cls(
            database_url=dsn,
            spool_url=_env("SPOOL_URL", "http://127.0.0.1:8000").rstrip("/"),
            spool_api_key=_first_key(_env("SPOOL_API_KEY", "")),
            signing_keys=keys,
            webhook_url=_env("ORDERS_WEBHOOK_URL", "http://127.0.0.1:8080/webhooks/spool"),
            queue=_env("ORDERS_QUEUE", "orders"),
            schema=schema,
            tolerance=int(_env("WEBHOOK_TOLERANCE_SECONDS", str(DEFAULT_TOLERANCE_SECONDS))),
            fail_first=int(_env("ORDERS_FAIL_FIRST", "0")),
        )


SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.orders (
    id             uuid PRIMARY KEY,
    item           text        NOT NULL,
    quantity       integer     NOT NULL CHECK (quantity > 0),
    status         text        NOT NULL DEFAULT 'placed',
    task_id        text,
    fail_remaining integer     NOT NULL DEFAULT 0,
    deliveries     integer     NOT NULL DEFAULT 0,  -- signed requests received
    duplicates     integer     NOT NULL DEFAULT 0,  -- of those, already processed
    processed      integer     NOT NULL DEFAULT 0,  -- times the work was done
    created_at     timestamptz NOT NULL DEFAULT now(),
    processed_at   timestamptz
);
-- One row per delivery processed: the primary key is the deduplication.
CREATE TABLE IF NOT EXISTS {s}.processed_webhooks (
    webhook_id  text PRIMARY KEY,
    order_id    uuid        NOT NULL REFERENCES {s}.orders (id),
    received_at timestamptz NOT NULL DEFAULT now()
);
"""


class OrderIn(BaseModel):
    item: str = Field(..., min_length=1, max_length=200)
    quantity: int = Field(1, gt=0, le=1000)
    # Demonstrates Spool's retries: the webhook answers 503 this many times.
    fail_times: int = Field(0, ge=0, le=10)


class State:
    """What the lifespan opens and closes: no module-level connections."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, spool: httpx.AsyncClient):
        self.settings = settings
        self.pool = pool
        self.spool = spool
        self.t = settings.schema  # table prefix, validated as an identifier

    async def enqueue(self, order_id: uuid.UUID) -> str:
        """Hands the order's background work to Spool; returns the task id.

        The idempotency key is the order id, so a retry of this call (or the
        sweeper's) returns the same task instead of a second one.
        """
        body = {
            "target": {"url": self.settings.webhook_url},
            "payload": {"event": "order.placed", "order_id": str(order_id)},
            "idempotency_key": f"order-{order_id}",
            "max_attempts": 8,
            "timeout": "10s",
        }
        resp = await self.spool.post(f"/v1/queues/{self.settings.queue}/tasks", json=body)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"spool answered {resp.status_code}: {resp.text[:300]}")
        task_id = resp.json()["id"]
        async with self.pool.acquire() as conn:
            await conn.execute(f"UPDATE {self.t}.orders SET task_id = $2 WHERE id = $1", order_id, task_id)
        return task_id

    async def sweep(self) -> None:
        """Enqueues orders whose enqueue failed (Spool unreachable when they
        were placed), every few seconds, until cancelled."""
        while True:
            await asyncio.sleep(5)
            try:
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(
                        f"SELECT id FROM {self.t}.orders WHERE task_id IS NULL"
                        " AND created_at < now() - interval '5 seconds' ORDER BY created_at LIMIT 100"
                    )
                for row in rows:
                    await self.enqueue(row["id"])
                    log.info("order %s enqueued by the sweeper", row["id"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, retried next round
                log.warning("sweep: %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings.from_env()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
    try:
        async with pool.acquire() as conn, conn.transaction():
            # Replicas starting together would race on CREATE IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('orders-app-schema'))")
            await conn.execute(SCHEMA.format(s=settings.schema))
        headers = {"Authorization": f"Bearer {settings.spool_api_key}"} if settings.spool_api_key else {}
        async with httpx.AsyncClient(base_url=settings.spool_url, headers=headers, timeout=10.0) as spool:
            app.state.s = State(settings, pool, spool)
            sweeper = asyncio.create_task(app.state.s.sweep())
            log.info("orders app ready: spool %s, webhook %s", settings.spool_url, settings.webhook_url)
            try:
                yield
            finally:
                sweeper.cancel()
                try:
                    await sweeper
                except asyncio.CancelledError:
                    pass
    finally:
        await pool.close()


app = FastAPI(title="orders", description="The guide's FastAPI app, running its background work on Spool.")
# Set on the router rather than FastAPI(lifespan=...): Debian 12's FastAPI
# (0.92) predates that argument, and this works on both.
app.router.lifespan_context = lifespan


def _state(request: Request) -> State:
    return request.app.state.s


@app.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers. It never touches the database, so a
    database blip does not get every replica restarted."""
    return {"status": "ok"}


@app.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers."""
    try:
        async with _state(request).pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready"})


def _order_json(row: asyncpg.Record) -> dict:
    out = dict(row)
    out["id"] = str(out["id"])
    for k in ("created_at", "processed_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    return out


@app.post("/orders", status_code=201)
async def place_order(order: OrderIn, request: Request) -> JSONResponse:
    st = _state(request)
    order_id = uuid.uuid4()
    fail = max(order.fail_times, st.settings.fail_first)
    async with st.pool.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {st.t}.orders (id, item, quantity, fail_remaining) VALUES ($1, $2, $3, $4)",
            order_id, order.item, order.quantity, fail,
        )
    try:
        task_id = await st.enqueue(order_id)
    except Exception as exc:  # noqa: BLE001 - the order is kept; the sweeper enqueues it
        log.warning("order %s: enqueue failed, the sweeper will retry: %s", order_id, exc)
        return JSONResponse({"id": str(order_id), "status": "placed", "task_id": None}, status_code=202)
    return JSONResponse({"id": str(order_id), "status": "placed", "task_id": task_id}, status_code=201)


@app.get("/orders/{order_id}")
async def get_order(order_id: uuid.UUID, request: Request) -> dict:
    st = _state(request)
    async with st.pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT * FROM {st.t}.orders WHERE id = $1", order_id)
    if row is None:
        raise HTTPException(404, "no such order")
    return _order_json(row)


@app.post("/webhooks/spool")
async def spool_webhook(request: Request) -> JSONResponse:
    st = _state(request)
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        return JSONResponse({"error": "body too large"}, status_code=413)
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        webhook_id = verify(st.settings.signing_keys, request.headers, body, tolerance=st.settings.tolerance)
    except VerificationError as exc:
        # 4xx: Spool fails the task at once instead of retrying a request
        # that will never verify.
        log.warning("refused a delivery: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=401)
    try:
        event = json.loads(body)
        order_id = uuid.UUID(event["order_id"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "payload is not an order event"}, status_code=422)

    async with st.pool.acquire() as conn, conn.transaction():
        # The row lock orders concurrent deliveries of one order.
        order = await conn.fetchrow(
            f"UPDATE {st.t}.orders SET deliveries = deliveries + 1 WHERE id = $1"
            " RETURNING fail_remaining", order_id,
        )
        if order is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        if order["fail_remaining"] > 0:
            await conn.execute(
                f"UPDATE {st.t}.orders SET fail_remaining = fail_remaining - 1 WHERE id = $1", order_id)
            log.info("order %s: failing on purpose (webhook %s, attempt %s)",
                     order_id, webhook_id, request.headers.get("spool-attempt"))
            # Committed with the counter; Spool retries a 503 with backoff.
            return JSONResponse({"error": "failing on purpose"}, status_code=503)
        first = await conn.fetchval(
            f"INSERT INTO {st.t}.processed_webhooks (webhook_id, order_id) VALUES ($1, $2)"
            " ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id", webhook_id, order_id,
        )
        if first is None:
            await conn.execute(f"UPDATE {st.t}.orders SET duplicates = duplicates + 1 WHERE id = $1", order_id)
            log.info("order %s: webhook %s already processed", order_id, webhook_id)
            return JSONResponse({"status": "duplicate"}, status_code=200)
        # The background work itself, in the same transaction as the
        # deduplication row: both happen, or neither does.
        await conn.execute(
            f"UPDATE {st.t}.orders SET status = 'processed', processed = processed + 1,"
            " processed_at = now() WHERE id = $1", order_id,
        )
    log.info("order %s processed (webhook %s)", order_id, webhook_id)
    return JSONResponse({"status": "processed"}, status_code=200)
