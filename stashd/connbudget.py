"""The connection commands' own budget: per connection and per client address, never per tenant.

AUTH, HELLO, CLIENT, SELECT, RESET and COMMAND (:data:`stashd.cost.CONNECTION`) touch no
data, so they do not spend the principal's rate: a tenant over its limit can still
connect, authenticate and leave. They are not free either: AUTH looks a key up, CLIENT
LIST walks every connection. So each costs, by the rule of :mod:`stashd.cost`, against
two GCRA budgets, and runs only when both have room:

- :data:`PER_CONNECTION`, 10 a second with 50 at once: redis-py's handshake (HELLO 3
  with AUTH, CLIENT SETINFO twice, CLIENT MAINT_NOTIFICATIONS, SELECT) is six at most,
  so a client that reconnects after every command still fits, and a flood on one
  connection gets 10 a second;
- :data:`PER_ADDRESS`, 1000 a minute with 1000 at once, for all connections from one
  client address (the peer's IP, all ports together) to this node: a pool of 150
  connections handshaking at once fits, while opening ever new connections buys a
  flooding address no more than about 17 a second. It applies when the daemon listens
  beyond loopback: on a loopback address every client is on this machine and comes
  from the same address (the zero-config setup, whose apps may open a connection per
  request), so one budget for all of them would throttle every app as one.

A request over either gets the data limit's ``-RATELIMIT ... retry after N ms``, runs
nothing and is counted by neither. Failed AUTHs still go through the failed-AUTH throttle
(:class:`~stashd.tenancy.AuthThrottle`) as well. The address budget is per node, as that
throttle is; clients behind one NAT address share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.ratelimit import LocalLimiter, Rate, decision, monotonic_ms, step

if TYPE_CHECKING:
    from collections.abc import Callable

PER_CONNECTION: Final = Rate(10, 1, 50)
PER_ADDRESS: Final = Rate(1000, 60, 1000)


class ConnectionBudget:
    """The two budgets of connection commands; each connection keeps its own TAT."""

    def __init__(
        self,
        per_connection: Rate = PER_CONNECTION,
        per_address: Rate | None = PER_ADDRESS,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        self.per_connection = per_connection
        self.per_address = per_address
        self.clock = clock
        self._addresses = LocalLimiter(clock)

    def admit(self, tat: float, address: str, cost: int) -> tuple[int, float]:
        """Spend ``cost`` from a connection whose TAT is ``tat`` and from its address.

        Returns the wait in ms (0: admitted) and the connection's new TAT, which stays
        ``tat`` when refused: a refused request is counted by neither budget.
        """
        now = self.clock()
        rate = self.per_connection
        new_tat = step(tat, now, rate, cost)
        if new_tat is None:
            return decision(tat, now, rate, cost, None).retry_after_ms, tat
        if self.per_address is not None:
            wait = self._addresses.wait_ms(address, self.per_address, cost)
            if wait:
                return wait, tat
        return 0, new_tat
