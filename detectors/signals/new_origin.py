"""``new_origin``: data taken from a network *and* a client the actor never used before, while
its earlier calls came from another (a stolen credential used from the thief's machine).

It needs no baseline beyond the actor's own first calls, so it speaks on a capture of
minutes (issue 16 item 3), where every other signal waits for history. Each download or
export from the new origin counts; the level grows with their number
(``NEW_ORIGIN_SCALE`` of them make 0.63), and counts far less where the network is one the
actor's peers use (a new office VPN, a team's new tool).

Calls from an address that several actors of the group use (a shared host: a scheduler or
batch server running jobs under each person's name) say nothing about where the actor
itself works, so they do not make its "earlier calls": an analyst whose only history is the
BI server's scheduled exports has no origin of its own yet, and its first session at its
desk is its first origin, not a new one. Such an actor's downloads from a new network are
still new with a client fewer than ``NEW_ORIGIN_PEERS`` of its peers use (a group behind one
NAT address; a stolen session replayed with another tool), but not on the group's first day,
before its clients are known.

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
from detectors.priors import (
    MAX_ORIGINS,
    MAX_OWN_HOSTS,
    MAX_PEER_ORIGINS,
    NEW_ORIGIN_COMMON,
    NEW_ORIGIN_MIN_EVENTS,
    NEW_ORIGIN_PEERS,
    NEW_ORIGIN_SCALE,
    NEW_ORIGIN_SHARED_HOST,
)
from detectors.signals.base import DAY_MS, Context, Signal
from detectors.signals.first_seen import address_block

# (The NEW_ORIGIN_* priors, MAX_ORIGINS and MAX_OWN_HOSTS, defined here before and now in
# detectors.priors, are re-exported.)
__all__ = ["MAX_ORIGINS", "MAX_OWN_HOSTS", "NEW_ORIGIN_COMMON", "NEW_ORIGIN_MIN_EVENTS",
           "NEW_ORIGIN_PEERS", "NEW_ORIGIN_SCALE", "NEW_ORIGIN_SHARED_HOST", "NewOrigin",
           "Origins", "PeerOrigins", "moved_inside", "peer_origins"]


class Origins:
    """An actor's networks and clients, and the new origin it is using, if any."""

    __slots__ = ("clients", "hosts", "n", "networks", "since", "suspect", "taken", "via")

    def __init__(self) -> None:
        self.n = 0
        self.via = 0  # of its calls, those from an address then known as a shared host
        self.hosts: dict[str, int] = {}  # the others, per address (its first MAX_OWN_HOSTS)
        self.networks: set[str] = set()
        self.clients: set[str] = set()
        self.suspect: tuple[str, str] | None = None  # (network, client) new to the actor
        self.taken = 0  # downloads and exports from it
        self.since = 0  # when it was first used (epoch ms)

    def __getstate__(self) -> tuple:
        return (self.n, self.networks, self.clients, self.suspect, self.taken, self.since,
                self.via, self.hosts)

    def __setstate__(self, state: tuple) -> None:
        self.n, self.networks, self.clients, self.suspect, self.taken, self.since = state[:6]
        # (a record from before shared hosts: all its calls its own)
        self.via, self.hosts = state[6:] or (0, {})

    def own_calls(self, shared: set[str]) -> int:
        """Its calls from no shared host (one found shared since they counted included)."""
        return self.n - self.via - sum(k for address, k in self.hosts.items()
                                       if address in shared)


class PeerOrigins:
    """A group's networks in use, and the addresses several of its actors share."""

    __slots__ = ("clients", "hosts", "networks", "shared", "since")

    def __init__(self, networks: dict[str, int] | None = None, since: int = -1) -> None:
        self.networks: dict[str, int] = networks or {}  # network -> actors that use it
        self.clients: dict[str, int] = {}  # client -> actors that use it
        self.hosts: dict[str, tuple[str, ...]] = {}  # address -> actors seen on it (a few)
        self.shared: set[str] = set()  # addresses of NEW_ORIGIN_SHARED_HOST actors or more
        self.since = since  # its first call (epoch ms; -1: none yet)

    def __getstate__(self) -> tuple:
        return (self.networks, self.clients, self.hosts, self.shared, self.since)

    def __setstate__(self, state: tuple) -> None:
        self.networks, self.clients, self.hosts, self.shared, self.since = state
        # (A checkpoint from when a shared host took more actors: what is one now, is.)
        for address in [a for a, who in self.hosts.items()
                        if len(who) >= NEW_ORIGIN_SHARED_HOST]:
            del self.hosts[address]
            if len(self.shared) < MAX_ORIGINS:
                self.shared.add(address)

    # Ops (scheduled by the signal, see Context.defer):
    def begin(self, t: int) -> None:
        """The group's first call, at ``t``."""
        if self.since < 0:
            self.since = t

    def count(self, kind: str, value: str) -> None:
        """One more actor uses ``value`` (``kind``: ``"networks"`` or ``"clients"``)."""
        seen = getattr(self, kind)
        if len(seen) < MAX_PEER_ORIGINS or value in seen:
            seen[value] = seen.get(value, 0) + 1

    def knows_clients(self, t: int) -> bool:
        """Whether its actors' clients are known: from a day after its first call (on the
        data's first morning most have not worked yet)."""
        return 0 <= self.since <= t - DAY_MS

    def on_shared_host(self, address: str | None, actor: str) -> bool:
        """Count ``actor`` on ``address``; whether the address is a shared host."""
        if address is None:
            return False
        if address in self.shared:
            return True
        who = self.hosts.get(address, ())
        if actor in who:
            return False
        if len(who) + 1 >= NEW_ORIGIN_SHARED_HOST:
            del self.hosts[address]
            if len(self.shared) < MAX_ORIGINS:
                self.shared.add(intern(address))
            return True
        if not who and len(self.hosts) >= MAX_PEER_ORIGINS:
            self.hosts.clear()  # (bounded: addresses seen by one actor are the bulk)
        self.hosts[intern(address)] = (*who, intern(actor))
        return False


def peer_origins(ctx: Context) -> PeerOrigins:
    """The group's state (a group checkpointed before it had shared hosts, a dict of
    networks, is converted as it is restored: ``engine._migrate_peer``)."""
    return ctx.peer.signals["new_origin"]


def on_shared_host(ctx: Context, group: PeerOrigins, address: str | None, actor: str) -> bool:
    """Whether ``address`` is a shared host, as the schedule has it; counting ``actor`` on it
    is an op (``PeerOrigins.on_shared_host``)."""
    if address is None or address in group.shared:
        return address is not None
    if actor not in group.hosts.get(address, ()):
        ctx.defer("new_origin", "on_shared_host", address, actor)
    return False


def moved_inside(own: Origins, group: PeerOrigins, network: str, client: str, t: int) -> bool:
    """Whether a new origin is a desk move, not a thief's machine: its client is one its peers
    use (known from the group's second day) and its network lies in an address block the actor
    or its peers use (another site's desks). A stolen credential used from outside the
    company's networks, or with a tool the team does not use, is neither.

    >>> group = PeerOrigins({"10.6.20.0/24": 2}, since=0)
    >>> group.clients["workbench"] = 3
    >>> own = Origins()
    >>> own.networks.add("10.2.20.0/24")
    >>> moved_inside(own, group, "10.6.21.0/24", "workbench", DAY_MS)
    True
    >>> moved_inside(own, group, "10.2.99.0/24", "workbench", DAY_MS)  # its own block
    True
    >>> moved_inside(own, group, "198.51.100.0/24", "workbench", DAY_MS)
    False
    >>> moved_inside(own, group, "10.6.21.0/24", "aws-cli", DAY_MS)
    False
    """
    if group.clients.get(client, 0) < NEW_ORIGIN_PEERS or not group.knows_clients(t):
        return False
    block = address_block(network)
    return (any(n.startswith(block) for n in own.networks)
            or any(k >= NEW_ORIGIN_PEERS and n.startswith(block)
                   for n, k in group.networks.items()))


class NewOrigin(Signal):
    name = "new_origin"
    family = "novelty"

    def new_actor(self) -> Origins:
        return Origins()

    def new_peer(self, key: str) -> PeerOrigins:
        return PeerOrigins()  # (bounded like the profiles)

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
            group = peer_origins(ctx)
            if (own.own_calls(group.shared) >= NEW_ORIGIN_MIN_EVENTS
                    or (group.clients.get(client, 0) < NEW_ORIGIN_PEERS
                        and group.knows_clients(ctx.t))):
                # (With calls from shared hosts only, the actor has no origin of its own
                # yet: its first with its peers' client is that, one with a client none of
                # them uses is still new; while no client is known as theirs, cold start,
                # neither is.)
                own.suspect, own.taken, own.since = (intern(network), intern(client)), 0, ctx.t
        if own.suspect != origin or not ev.is_egress:
            return
        own.taken += 1
        level = saturate(own.taken, NEW_ORIGIN_SCALE)
        group = peer_origins(ctx)
        note = ""
        if group.networks.get(network, 0) >= NEW_ORIGIN_PEERS:
            level *= NEW_ORIGIN_COMMON
            note = " (common among peers)"
        elif moved_inside(own, group, network, client, ctx.t):
            level *= NEW_ORIGIN_COMMON
            note = " (its peers' client, in an address block it or its peers use)"
        ctx.raise_("new_origin", level, [Reason(
            "new_origin", level,
            f"{own.taken} downloads or exports from network {network} with client {client}, "
            f"both never used before by this actor (its {own.n} earlier calls came from "
            f"{len(own.networks)} other network(s))" + note,
            {"network": network, "client": client, "downloads": own.taken},
            {"networks_seen": len(own.networks), "clients_seen": len(own.clients)})])

    def learn_one(self, ctx: Context) -> None:
        ev, own = ctx.ev, ctx.st.signals["new_origin"]
        network = ctx.network
        group = peer_origins(ctx)
        if group.since < 0:
            ctx.defer("new_origin", "begin", ctx.t)
        address = ev.source_ip
        own.n += 1
        if on_shared_host(ctx, group, address, ev.actor):
            own.via += 1  # (a shared host's calls are not the actor's own origin)
        else:
            hosts = own.hosts
            if address in hosts:
                hosts[address] += 1  # (the common case: no intern per event)
            elif address is not None and len(hosts) < MAX_OWN_HOSTS:
                hosts[intern(address)] = 1
        if (own.suspect is not None and (network, ev.client) != own.suspect
                and (network in own.networks or ev.client in own.clients)):
            # Back on an origin it had used: the new one is no longer being used alone.
            own.suspect, own.taken = None, 0
        if own.suspect is not None:
            return  # a suspect origin is not learned as the actor's own while in use
        for value, mine, kind in ((network, own.networks, "networks"),
                                  (ev.client, own.clients, "clients")):
            if value is not None and len(mine) < MAX_ORIGINS:
                # (the group counts the actors that use it: each actor once)
                if value not in mine:
                    ctx.defer("new_origin", "count", kind, intern(value))
                mine.add(intern(value))
