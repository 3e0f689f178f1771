"""The data of one seed generation: products, SIMs and subscriptions with their indexes, and the reads and changes
the API routes and the control plane make on them.

Every public method holds the shared lock. Orders complete lazily, so each method first calls :attr:`before_read`
(set by the order engine) to settle the orders that are due: a read always sees the effects of finished orders.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from airflow_provider_truconnect.emulator.errors import Problem, access_denied, invalid_params, not_found
from airflow_provider_truconnect.emulator.models import SIM_STATUSES, Product, Sim, Subscription
from airflow_provider_truconnect.emulator.notifications import Notifier
from airflow_provider_truconnect.emulator.runtime import Runtime
from airflow_provider_truconnect.emulator.seed import seed_store


class DataStore:
    """Products, SIMs and subscriptions of every client, seeded deterministically from ``config.seed``."""

    def __init__(self, runtime: Runtime) -> None:
        """:param runtime: the shared lock, configuration and clock."""
        self.runtime = runtime
        cfg = runtime.config
        self.products: dict[str, Product] = {}
        self.product_list: list[Product] = []
        self.sims: dict[str, Sim] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.subs_by_iccid: dict[str, list[Subscription]] = {}
        self.client_subs: dict[str, list[Subscription]] = {c: [] for c in cfg.clients}
        self.client_emails: dict[str, dict[str, list[str]]] = {c: {} for c in cfg.clients}
        self.rng = random.Random(f"{cfg.seed}:runtime")
        self.notifier = Notifier(self.rng)
        self.before_read: Callable[[], None] = lambda: None
        self._sim_counter = 0
        self._client_numbers = {c: i + 1 for i, c in enumerate(sorted(cfg.clients))}
        seed_store(self, runtime.now())

    def new_iccid(self, client_id: str, rng: random.Random) -> str:
        """:param client_id: the owner. :param rng: the random source.
        :return: a fresh ICCID: [DOC] starts 8944; 19 digits: 8944 + client(2) + counter(7) + random(6)."""
        self._sim_counter += 1
        return f"8944{self._client_numbers.get(client_id, 99):02d}{self._sim_counter:07d}{rng.randrange(10**6):06d}"

    def add_sim(self, sim: Sim) -> None:
        """:param sim: a new SIM (from a completed activation order)."""
        self.sims[sim.iccid] = sim
        self.subs_by_iccid[sim.iccid] = []
        if sim.email:
            self.client_emails[sim.client_id].setdefault(sim.email, []).append(sim.iccid)

    def add_subscription(self, sub: Subscription) -> None:
        """:param sub: a new subscription of a known SIM (from a completed order)."""
        self.subscriptions[sub.id] = sub
        self.subs_by_iccid[sub.sim_id].append(sub)
        self.client_subs[sub.client_id].append(sub)

    # ------------------------------------------------------------------------------------------------- ownership
    def own_sim(self, client_id: str, iccid: str) -> Sim:
        """:param client_id: caller. :param iccid: the SIM. :return: the SIM. :raises ApiError: 403/404."""
        sim = self.sims.get(iccid)
        if sim is None:
            raise not_found("SIM", iccid)
        if sim.client_id != client_id:
            raise access_denied("SIM", iccid)
        return sim

    def own_subscription(self, client_id: str, sub_id: str) -> Subscription:
        """:param client_id: caller. :param sub_id: id. :return: the subscription, refreshed to now.
        :raises ApiError: 403/404."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise not_found("Subscription", sub_id)
        if sub.client_id != client_id:
            raise access_denied("Subscription", sub_id)
        sub.refresh(self.runtime.now())
        return sub

    # -------------------------------------------------------------------------------------------------- products
    def list_products(self, page: int, page_size: int) -> tuple[list[Product], bool]:
        """:param page: 1-based page. :param page_size: items per page.
        :return: the page's products and whether another page exists."""
        start = (page - 1) * page_size
        return self.product_list[start : start + page_size], start + page_size < len(self.product_list)

    def get_product(self, product_id: str) -> Product:
        """:param product_id: the id. :return: the product. :raises ApiError: 404."""
        product = self.products.get(product_id)
        if product is None:
            raise not_found("Product", product_id)
        return product

    # ------------------------------------------------------------------------------------------------------ SIMs
    def get_sim(self, client_id: str, iccid: str) -> Sim:
        """:param client_id: caller. :param iccid: the SIM. :return: the SIM. :raises ApiError: 403/404."""
        with self.runtime.lock:
            self.before_read()
            return self.own_sim(client_id, iccid)

    def cancel_sim(self, client_id: str, iccid: str) -> None:
        """[DOC CANCEL] free an unused, uninstalled profile and its subscriptions.

        :param client_id: caller. :param iccid: the SIM.
        :raises ApiError: 403/404; 400 ``INVALID_REQUEST_PARAMS`` ([INFERRED]) if installed or used.
        """
        with self.runtime.lock:
            self.before_read()
            sim = self.own_sim(client_id, iccid)
            subs = self.subs_by_iccid.get(iccid, [])
            if (
                sim.status in ("Installed", "Unavailable")
                or sim.used
                or any(s.current_balance < s.initial_balance for s in subs)
            ):
                raise invalid_params(
                    [Problem(f"SIM {iccid} cannot be cancelled: it is installed or has been used", "$.iccid")]
                )
            # [INFERRED] "freed": the SIM and its subscriptions disappear (later reads answer 404).
            del self.sims[iccid]
            removed = {s.id for s in subs}
            for sub_id in removed:
                self.subscriptions.pop(sub_id, None)
            self.subs_by_iccid.pop(iccid, None)
            self.client_subs[client_id] = [s for s in self.client_subs[client_id] if s.id not in removed]
            if sim.email:
                iccids = self.client_emails[client_id].get(sim.email, [])
                if iccid in iccids:
                    iccids.remove(iccid)

    def set_sim_status(self, iccid: str, status: str) -> Sim:
        """Control plane: force a profile status (device download/installation is not driven by the API).

        :param iccid: the SIM. :param status: one of ``Released/Downloaded/Installed/Unavailable``.
        :return: the SIM. :raises KeyError: unknown SIM. :raises ValueError: bad status.
        """
        if status not in SIM_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SIM_STATUSES)}")
        with self.runtime.lock:
            sim = self.sims[iccid]
            if sim.status != status:
                self.change_sim_status(sim, status)
            return sim

    def change_sim_status(self, sim: Sim, status: str) -> None:
        """:param sim: a SIM. :param status: its new profile status (recorded as a ``DOWNLOAD_PROGRESS`` event)."""
        sim.status = status
        sim.last_modified = self.runtime.now()
        self.notifier.download_progress(sim)

    def set_notification(self, client_id: str, iccid: str, ntype: str, webhook_url: str | None) -> dict[str, Any]:
        """[GUESS modelled on v1] register (or with None, remove) a per-SIM webhook.

        :param client_id: caller. :param iccid: SIM. :param ntype: notification type. :param webhook_url: URL or None.
        :return: the registration. :raises ApiError: 400/403/404.
        """
        with self.runtime.lock:
            return self.notifier.register(self.own_sim(client_id, iccid), ntype, webhook_url)

    # --------------------------------------------------------------------------------------------- subscriptions
    def get_subscription(self, client_id: str, sub_id: str) -> Subscription:
        """:param client_id: caller. :param sub_id: id. :return: the subscription. :raises ApiError: 403/404."""
        with self.runtime.lock:
            self.before_read()
            return self.own_subscription(client_id, sub_id)

    def list_subscriptions(
        self,
        client_id: str,
        page: int,
        page_size: int,
        *,
        iccid: str | None = None,
        email: str | None = None,
        product_id: str | None = None,
        before: float | None = None,
        after: float | None = None,
        statuses: frozenset[str] | None = None,
    ) -> tuple[list[Subscription], bool]:
        """List the caller's subscriptions, oldest first, filtered lazily.

        :param client_id: caller.
        :param page: 1-based page.
        :param page_size: items per page.
        :param iccid: [DOC] every subscription the SIM ever had.
        :param email: [DOC] subscriber email.
        :param product_id: [DOC] ``product-id``.
        :param before: [DOC] created strictly before (epoch).
        :param after: [DOC] created strictly after (epoch).
        :param statuses: [INFERRED] emulator extension ``status``.
        :return: the page and whether another page exists.
        """
        with self.runtime.lock:
            self.before_read()
            now = self.runtime.now()
            source = self._subscription_source(client_id, iccid, email)
            start = (page - 1) * page_size
            checks: list[Callable[[Subscription], bool]] = []
            if product_id is not None:
                checks.append(lambda s: s.product_id == product_id)
            if before is not None:
                checks.append(lambda s: s.created < before)
            if after is not None:
                checks.append(lambda s: s.created > after)
            if statuses is not None:

                def status_ok(s: Subscription) -> bool:
                    s.refresh(now)
                    return s.status in statuses

                checks.append(status_ok)
            if checks:
                matching: Iterator[Subscription] = (s for s in source if all(c(s) for c in checks))
                window = list(islice(matching, start, start + page_size + 1))
                items, more = window[:page_size], len(window) > page_size
            else:
                items, more = source[start : start + page_size], start + page_size < len(source)
            for sub in items:
                sub.refresh(now)
            return items, more

    def _subscription_source(self, client_id: str, iccid: str | None, email: str | None) -> list[Subscription]:
        if iccid is not None:
            sim = self.sims.get(iccid)
            # [INFERRED] a filter on someone else's (or an unknown) SIM yields an empty list, not 403/404.
            source = self.subs_by_iccid.get(iccid, []) if sim is not None and sim.client_id == client_id else []
            if email is not None and (sim is None or sim.email != email):
                return []
            return source
        if email is not None:
            return [s for icc in self.client_emails.get(client_id, {}).get(email, []) for s in self.subs_by_iccid[icc]]
        return self.client_subs.get(client_id, [])
