"""The deterministic data set: the product catalogue and, per client, SIMs with subscriptions in every status.

Everything derives from ``config.seed`` (one RNG per client), so two emulators with the same seed hold the same ids.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from airflow_provider_truconnect.emulator.models import DAY, Product, Sim, Subscription, b64id, matching_id

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.store import DataStore

CATALOGUE: list[tuple[str, list[str], int, str, int, str, float, str, str]] = [
    ("1GB 7-Day Europe", ["ESIM"], 7, "DAYS", 1, "GB", 5, "EUR", "EUROPE"),
    ("3GB 30-Day Europe", ["ESIM", "PSIM"], 30, "DAYS", 3, "GB", 12, "EUR", "EUROPE"),
    ("5GB 30-Day Data Bundle", ["ESIM"], 30, "DAYS", 5, "GB", 20, "USD", "GLOBAL"),
    ("10GB 30-Day Global", ["ESIM", "PSIM"], 30, "DAYS", 10, "GB", 45.5, "USD", "GLOBAL"),
    ("500MB 3-Day UK", ["ESIM"], 3, "DAYS", 500, "MB", 3, "GBP", "UK"),
    ("20GB 90-Day Americas", ["ESIM"], 90, "DAYS", 20, "GB", 60, "USD", "AMERICAS"),
    ("Plan name", ["ESIM"], 90, "DAYS", 50, "MB", 20, "EUR", "GLOBAL"),
    ("2GB Monthly Asia", ["PSIM", "ESIM"], 1, "MONTHS", 2, "GB", 15, "USD", "ASIA"),
]


def seed_store(store: DataStore, now: float) -> None:
    """Fill an empty store: the catalogue, then each client's SIMs and subscriptions.

    :param store: the store to fill.
    :param now: the emulator's now (seeded dates are relative to it).
    """
    cfg = store.runtime.config
    prng = random.Random(f"{cfg.seed}:products")
    for name, sim_types, duration, dunit, data, unit, price, currency, footprint in CATALOGUE:
        product = Product(b64id(prng), name, list(sim_types), duration, dunit, data, unit, price, currency, footprint)
        store.products[product.id] = product
        store.product_list.append(product)
    for client_id in sorted(cfg.clients):
        count = cfg.seed_subscriptions if client_id == cfg.default_client else min(12, cfg.seed_subscriptions)
        _seed_client(store, client_id, count, now)


def _seed_client(store: DataStore, client_id: str, count: int, now: float) -> None:
    cfg = store.runtime.config
    rng = random.Random(f"{cfg.seed}:{client_id}")
    products = store.product_list
    subs = store.client_subs[client_id]
    emails = store.client_emails[client_id]
    email_pool = max(1, count // 4)
    domain = "example.com" if client_id == cfg.default_client else "other.example"
    remaining = count
    while remaining > 0:
        per_sim = min(remaining, rng.choice((1, 1, 2, 2, 3, 3, 4, 5)))
        remaining -= per_sim
        iccid = store.new_iccid(client_id, rng)
        email = f"customer{rng.randrange(email_pool)}@{domain}"
        sim = Sim(iccid, client_id, matching_id(rng), "ESIM" if rng.random() < 0.9 else "PSIM", "Released", now)
        sim.email = email
        store.sims[iccid] = sim
        emails.setdefault(email, []).append(iccid)
        sim_subs = [_seed_subscription(rng, client_id, iccid, rng.choice(products), now) for _ in range(per_sim)]
        used = any(s.current_balance < s.initial_balance for s in sim_subs)
        sim.used = used
        roll = rng.random()
        if used:
            terminal = all(s.status in ("EXPIRED", "DEPLETED") for s in sim_subs)
            sim.status = "Unavailable" if terminal and roll < 0.05 else "Installed"
        else:
            sim.status = "Downloaded" if roll < 0.2 else "Released"
        sim.last_modified = max(s.created for s in sim_subs)
        store.subs_by_iccid[iccid] = sim_subs
        subs.extend(sim_subs)
        for s in sim_subs:
            store.subscriptions[s.id] = s
    subs.sort(key=lambda s: (s.created, s.id))


def _seed_subscription(rng: random.Random, client_id: str, iccid: str, product: Product, now: float) -> Subscription:
    dur = product.duration_seconds
    initial = product.data_bytes
    roll = rng.random()
    activation: float | None
    expiry: float | None
    if roll < 0.45:
        status = "ACTIVE"
        activation = now - rng.uniform(0.0, dur * 0.9)
        expiry = activation + dur
        # ~20 % of active plans are nearly used up (< 10 % left), so a low-balance report finds some.
        left = rng.uniform(0.005, 0.09) if rng.random() < 0.2 else rng.uniform(0.1, 1.0)
        current = max(1, int(initial * left))
        created = activation - rng.uniform(0.0, 3600.0)
    elif roll < 0.55:
        status = "PENDING"
        activation = now + rng.uniform(3600.0, 30 * DAY)
        expiry = activation + dur
        current = initial
        created = now - rng.uniform(60.0, 10 * DAY)
    elif roll < 0.62:
        status = "PENDING_USAGE"
        activation = expiry = None
        current = initial
        created = now - rng.uniform(60.0, 30 * DAY)
    elif roll < 0.8:
        status = "DEPLETED"
        activation = now - rng.uniform(dur * 0.2, dur * 3)
        expiry = activation + dur
        current = 0
        created = activation - rng.uniform(0.0, 3600.0)
    else:
        status = "EXPIRED"
        activation = now - dur - rng.uniform(DAY, 200 * DAY)
        expiry = activation + dur
        current = int(initial * rng.uniform(0.0, 0.8))
        created = activation - rng.uniform(0.0, 3600.0)
    return Subscription(
        id=b64id(rng),
        client_id=client_id,
        sim_id=iccid,
        product_id=product.id,
        name=product.name,
        created=float(int(created)),
        activation=None if activation is None else float(int(activation)),
        expiry=None if expiry is None else float(int(expiry)),
        status=status,
        initial_balance=initial,
        current_balance=current,
        duration_seconds=dur,
    )
