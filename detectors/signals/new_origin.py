"""``new_origin``: data taken from a network *and* a client the actor never used before, while
its earlier calls came from another (a stolen credential used from the thief's machine).

It needs no baseline beyond the actor's own first calls, so it speaks on a capture of
minutes (issue 16 item 3), where every other signal waits for history. Each download or
export from the new origin counts; the level grows with their number
(``NEW_ORIGIN_SCALE`` of them make 0.63), and counts far less where the network is one the
actor's peers use (a new office VPN, a team's new tool).

>>> from detectors.events import parse_event
>>> from detectors.engine import Engine
>>> eng = Engine()
>>> def call(i, ip, client, action="read"):
...     return eng.process(parse_event({"event_id": f"e{i}", "time": 1_700_000_000_000 + i * 20_000,
...         "actor": "role/app", "role": "AssumedRole", "action": action,
...         "resource_type": "s3", "customer_id": "bucket-a", "source_ip": ip, "client": client}))
>>> _ = [call(i, "10.0.0.5", "ec2-sdk") for i in range(2)]        # its own first calls
>>> _ = [call(i, "10.0.0.5", "ec2-sdk", "download") for i in range(2, 4)]  # its downloads
>>> [call(i, "198.51.100.23", "aws-cli", "download").score for i in range(4, 9)][-1] >= 60
True
>>> "never used before" in eng.state_of("role/app").reasons["new_origin"][1][0].description
True
"""

from __future__ import annotations

from sys import intern
from typing import Any

from detectors.models import Reason, saturate
from detectors.signals.base import DAY_MS, Context, Signal

# Priors (issue 14: documented, named in one place per signal).
NEW_ORIGIN_MIN_EVENTS = 2  # the actor's own calls before an origin can be "new" to it
NEW_ORIGIN_SCALE = 3.0     # downloads from the new origin that make a level of 0.63
NEW_ORIGIN_COMMON = 0.3    # the level's share where peers use the network too
MAX_ORIGINS = 64           # networks and clients remembered per actor (bounded memory)


class Origins:
    """An actor's networks and clients, and the new origin it is using, if any."""

    __slots__ = ("clients", "n", "networks", "since", "suspect", "taken")

    def __init__(self) -> None:
        self.n = 0
        self.networks: set[str] = set()
        self.clients: set[str] = set()
        self.suspect: tuple[str, str] | None = None  # (network, client) new to the actor
        self.taken = 0  # downloads and exports from it
        self.since = 0  # when it was first used (epoch ms)

    def __getstate__(self) -> tuple:
        return (self.n, self.networks, self.clients, self.suspect, self.taken, self.since)

    def __setstate__(self, state: tuple) -> None:
        self.n, self.networks, self.clients, self.suspect, self.taken, self.since = state


class NewOrigin(Signal):
    name = "new_origin"
    family = "novelty"

    def new_actor(self) -> Origins:
        return Origins()

    def new_peer(self, key: str) -> dict[str, int]:
        return {}  # network -> actors of the group seen on it (bounded like the profiles)

    def new_role(self, state: Any) -> Any:
        return state  # where an actor connects from is not about its role

    def score_one(self, ctx: Context) -> None:
        ev, own = ctx.ev, ctx.st.signals["new_origin"]
        if own.suspect is not None and ctx.t - own.since >= DAY_MS:
            # A day on, the origin is the actor's new normal (a new desk and laptop).
            own.networks.add(own.suspect[0])
            own.clients.add(own.suspect[1])
            own.suspect, own.taken = None, 0
        network = ctx.network
        client = ev.client
        if network is None or client is None:
            return
        origin = (network, client)
        if (own.suspect != origin and own.n >= NEW_ORIGIN_MIN_EVENTS
                and network not in own.networks and client not in own.clients):
            own.suspect, own.taken, own.since = (intern(network), intern(client)), 0, ctx.t
        if own.suspect != origin or not ev.is_egress:
            return
        own.taken += 1
        level = saturate(own.taken, NEW_ORIGIN_SCALE)
        peers = ctx.peer.signals["new_origin"].get(network, 0)
        if peers >= 2:
            level *= NEW_ORIGIN_COMMON
        ctx.raise_("new_origin", level, [Reason(
            "new_origin", level,
            f"{own.taken} downloads or exports from network {network} with client {client}, "
            f"both never used before by this actor (its {own.n} earlier calls came from "
            f"{len(own.networks)} other network(s))" + (" (common among peers)" if peers >= 2
                                                      else ""),
            {"network": network, "client": client, "downloads": own.taken},
            {"networks_seen": len(own.networks), "clients_seen": len(own.clients)})])

    def learn_one(self, ctx: Context) -> None:
        ev, own = ctx.ev, ctx.st.signals["new_origin"]
        network = ctx.network
        own.n += 1
        if (own.suspect is not None and (network, ev.client) != own.suspect
                and (network in own.networks or ev.client in own.clients)):
            # Back on an origin it had used: the new one is no longer being used alone.
            own.suspect, own.taken = None, 0
        if own.suspect is not None:
            return  # a suspect origin is not learned as the actor's own while in use
        if network is not None and len(own.networks) < MAX_ORIGINS:
            if network not in own.networks:
                seen = ctx.peer.signals["new_origin"]
                if len(seen) < 4 * MAX_ORIGINS or network in seen:
                    seen[network] = seen.get(network, 0) + 1
            own.networks.add(intern(network))
        if ev.client is not None and len(own.clients) < MAX_ORIGINS:
            own.clients.add(intern(ev.client))
