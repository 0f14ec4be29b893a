"""The broker: streams, subscriptions and their messages, independent of any protocol.

Adapters use :class:`Broker` (built with :meth:`Broker.open` from
:class:`BrokerSettings`) and the values in :mod:`relaymq.broker.models`.
"""

from relaymq.broker.broker import Broker, wall_clock_ms
from relaymq.broker.settings import BrokerSettings

__all__ = ["Broker", "BrokerSettings", "wall_clock_ms"]
