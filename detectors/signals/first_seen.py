"""``first_seen``: an action, client, network or set of sensitive fields the actor rarely or
never used, discounted when its peers use it commonly (a client: or several of them took it
up), or (a network) when it lies in an address block the actor or its peers use (its reasons are
``first_seen_<trait>``); while the actor is new, only what is rare for its peers too. A new
client is judged when the actor's hour ends, once the group knows who took it up that hour."""

from __future__ import annotations

import ipaddress
from sys import intern

from detectors.models import FirstSeen as FirstSeenModel
from detectors.models import Reason
from detectors.priors import (
    COMMON_FACTOR,
    COMMON_SHARE,
    FIRST_SEEN_ADOPTERS,
    FIRST_SEEN_PEER_HISTORY,
    FIRST_SEEN_PEER_MAX_VALUES,
)
from detectors.signals.base import NEGLIGIBLE, Context, Signal, bump

# (COMMON_SHARE and COMMON_FACTOR, priors defined here before, are re-exported.)
__all__ = ["COMMON_FACTOR", "COMMON_SHARE", "FirstSeen", "address_block", "near_known",
           "network_of"]


def network_of(ip: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to: staff move within one.

    >>> network_of("10.1.2.3"), network_of("2001:db8:1:2::5")
    ('10.1.2.0/24', '2001:db8:1::/48')
    """
    if ip is None:
        return None
    if "." in ip and ":" not in ip:  # fast path for IPv4, the common case
        return ip[:ip.rfind(".")] + ".0/24"
    return str(ipaddress.ip_network(f"{ip}/48", strict=False))



def address_block(network: str) -> str:
    """The /16 (IPv4) or /32 (IPv6) block a network from :func:`network_of` lies in, as a
    prefix of the networks inside it.

    >>> address_block("100.64.17.0/24"), address_block("2001:db8:1::/48")
    ('100.64.', '2001:db8:')
    """
    sep = "." if "." in network else ":"
    head, _, rest = network.partition(sep)
    return head + sep + rest.partition(sep)[0] + sep


def near_known(network: str | None, own: FirstSeenModel, peers: FirstSeenModel) -> bool:
    """Whether a network new to the actor lies in a block it has used, or one its peers use
    commonly: phones on a carrier's NAT, or a VPN pool, move between /24s of one block; a
    stolen credential's network lies outside them."""
    if not network:
        return False
    block = address_block(network)
    if any(k.startswith(block) for k in own.counts.get("network", {})):
        return True
    seen = sum(v for k, v in peers.counts.get("network", {}).items() if k.startswith(block))
    return bool(peers.n) and seen / peers.n >= COMMON_SHARE


class FirstSeen(Signal):
    name = "first_seen"
    family = "novelty"

    def new_actor(self) -> FirstSeenModel:
        s = self.settings
        return FirstSeenModel(min_events=s.min_history_events, max_values=s.max_profile_values)

    def new_peer(self, key: str) -> FirstSeenModel:
        return FirstSeenModel(min_events=FIRST_SEEN_PEER_HISTORY * self.settings.min_history_events,
                              max_values=FIRST_SEEN_PEER_MAX_VALUES)

    def score_one(self, ctx: Context) -> None:
        # Scores, then learns: no other signal reads these profiles.
        ev = ctx.ev
        # Interned: the profiles of thousands of actors share one copy of each value.
        network = ctx.network
        traits = {"access": intern(f"{ev.action}:{ev.resource_type}"),
                  "client": intern(ev.client) if ev.client else None,
                  "network": intern(network) if network else None,
                  "fields": intern(",".join(sorted(ev.fields))) if ev.fields else None}
        own, peers = ctx.st.signals["first_seen"], ctx.peer.signals["first_seen"]
        self._judge(ctx, own, peers, traits)
        client = traits["client"]
        taken = client is not None and client not in own.counts.get("client", ())
        own.learn_one(traits)
        ctx.defer("first_seen", "learn_shared", traits)  # (traits: made per event)
        if taken:  # (after learn_shared: the group keeps adopters of the clients it keeps)
            ctx.defer("first_seen", "adopt", "client", client)

    @staticmethod
    def _judge(ctx: Context, own: FirstSeenModel, peers: FirstSeenModel,
               traits: dict[str, str | None]) -> None:
        cold = own.n < own.min_events  # cold start: only what is rare for the peers too
        reasons = (peers if cold else own).explain(traits)
        now = []
        for r in reasons:
            trait = r.detector.removeprefix("first_seen_")
            if cold:
                r.description = r.description.replace("usually", "peers usually")
            if trait == "client" and FirstSeen._taken_up(r, peers):
                now.append(r)
                continue
            if not cold and peers.n and (peers.counts.get(trait, {}).get(traits[trait], 0)
                                         / peers.n >= COMMON_SHARE):
                # What the actor's peers use commonly counts far less.
                r.score *= COMMON_FACTOR
                r.description += " (common among peers)"
                now.append(r)
                continue
            if trait == "network" and near_known(traits["network"], own, peers):
                r.score *= COMMON_FACTOR
                r.description += " (in an address block the actor or its peers use)"
            if trait != "client":
                now.append(r)
            # Whether a new client is the team's (rolled out to all of it this hour) is known
            # when the hour's adopters are: judged when the actor's hour ends, its strongest.
            elif own.pending is None or r.score > own.pending.score:
                own.pending = r
        if not reasons:
            return
        bump(ctx.st.hour_counts, "novel")  # (late events too, as ever)
        FirstSeen._raise(ctx, now)

    @staticmethod
    def _taken_up(r: Reason, peers: FirstSeenModel) -> bool:
        """Discount a new client several of the actor's peers took up (a team's new console,
        a browser's update): it is the group's, not the actor's own novelty."""
        took = peers.adopted("client", r.observed)
        if took < FIRST_SEEN_ADOPTERS:
            return False
        r.score *= COMMON_FACTOR
        r.description += f" (taken up by {took} peers)"
        return True

    @staticmethod
    def _raise(ctx: Context, reasons: list[Reason], level: float = 0.0,
               before: list[Reason] | None = None) -> None:
        """Raise the level for ``reasons``, on top of ``level`` explained by ``before``."""
        keep = 1.0 - level
        for r in reasons:
            keep *= 1.0 - r.score
        if reasons:
            ctx.raise_("first_seen", 1.0 - keep, [*(before or ()), *reasons])

    def end_hour(self, ctx: Context, counts: dict[str, int]) -> None:
        own = ctx.st.signals["first_seen"]
        r = own.pending
        if r is None:
            return
        own.pending = None
        self._taken_up(r, ctx.peer.signals["first_seen"])
        # With what else was new in the hour (a new network too), as if judged with it.
        level = ctx.st.levels.get("first_seen", 0.0)
        if level <= NEGLIGIBLE:
            self._raise(ctx, [r])
        else:
            self._raise(ctx, [r], level, ctx.st.reasons["first_seen"][1])
