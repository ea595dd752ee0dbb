"""/metrics: the broker's figures in Prometheus text format, through prometheus_client.

Everything is read at scrape time from the broker (a custom collector), so nothing on the
message path pays for metrics; the store keeps its sync-latency and batch-size histograms.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class BrokerCollector:
    def __init__(self, service):
        self.service = service

    def collect(self):
        service = self.service
        role = GaugeMetricFamily("pybrokerd_master", "1 on the master, 0 on a slave")
        role.add_metric([], 1 if service.broker is not None else 0)
        yield role
        broker = service.broker
        if broker is None:
            return
        yield from self._destinations(broker)
        yield from self._connections(broker)
        yield from self._limits(broker)
        for name, store in (("messages", service.store), ("scheduler", service.scheduler_store)):
            if store is not None and hasattr(store, "sync_seconds"):
                yield from self._store(name, store)
        if service.scheduler is not None:
            jobs = GaugeMetricFamily("pybrokerd_scheduled_jobs", "jobs waiting in the scheduler")
            jobs.add_metric([], len(service.scheduler.jobs))
            yield jobs

    @staticmethod
    def _destinations(broker):
        labels = ["destination"]
        gauges = {key: GaugeMetricFamily("pybrokerd_destination_" + key, text, labels=labels)
                  for key, text in (("pending", "messages waiting, in flight or paged out"),
                                    ("in_flight", "delivered, not yet acked"),
                                    ("consumers", "consumers"),
                                    ("memory_bytes", "bytes of its messages held in memory"))}
        counters = {key: CounterMetricFamily("pybrokerd_destination_" + key, text, labels=labels)
                    for key, text in (("enqueued", "messages sent to it"),
                                      ("dequeued", "messages acked, NACKed or purged"),
                                      ("dispatched", "deliveries made"),
                                      ("expired", "messages that expired"))}
        management = broker.management
        rows = [(d, management.queue_statistics(q)) for d, q in sorted(broker.queues.items())]
        rows += [(t, management.topic_statistics(t)) for t in management.topic_names()]
        for dest, stats in rows:
            name = [dest.stomp()]
            gauges["pending"].add_metric(name, stats["size"])
            gauges["in_flight"].add_metric(name, stats["inflightCount"])
            gauges["consumers"].add_metric(name, stats["consumerCount"])
            gauges["memory_bytes"].add_metric(name, stats["memoryUsage"])
            counters["enqueued"].add_metric(name, stats["enqueueCount"])
            counters["dequeued"].add_metric(name, stats["dequeueCount"])
            counters["dispatched"].add_metric(name, stats["dispatchCount"])
            counters["expired"].add_metric(name, stats["expiredCount"])
        yield from gauges.values()
        yield from counters.values()

    @staticmethod
    def _connections(broker):
        by_protocol = {"stomp": 0, "amqp": 0, "openwire": 0}
        for session in list(broker.connections):
            by_protocol[session.protocol] = by_protocol.get(session.protocol, 0) + 1
        family = GaugeMetricFamily("pybrokerd_connections", "open client connections",
                                   labels=["protocol"])
        for protocol, n in sorted(by_protocol.items()):
            family.add_metric([protocol], n)
        yield family

    @staticmethod
    def _limits(broker):
        used = GaugeMetricFamily("pybrokerd_usage_bytes", "what each flow-control limit counts",
                                 labels=["resource"])
        limit = GaugeMetricFamily("pybrokerd_limit_bytes", "the limits (0: none)",
                                  labels=["resource"])
        for usage in broker.flow.usages():
            used.add_metric([usage.name], usage.current())
            limit.add_metric([usage.name], usage.limit)
        yield used
        yield limit
        blocked = GaugeMetricFamily("pybrokerd_blocked_producers",
                                    "sends waiting for room under a full limit")
        blocked.add_metric([], broker.flow.waiting())
        yield blocked
        failed = CounterMetricFamily("pybrokerd_failed_sends",
                                     "sends refused after --send-fail-timeout")
        failed.add_metric([], broker.flow.failed_sends)
        yield failed

    @staticmethod
    def _store(name, store):
        for metric, histogram, text in (
                ("pybrokerd_store_sync_seconds", store.sync_seconds, "time of each fsync"),
                ("pybrokerd_store_batch_operations", store.batch_sizes,
                 "operations per group commit")):
            family = HistogramMetricFamily(metric, text, labels=["store"])
            cumulative, buckets = 0, []
            for bound, count in zip(list(histogram.bounds) + ["+Inf"], histogram.counts):
                cumulative += count
                buckets.append((str(bound), cumulative))
            family.add_metric([name], buckets, histogram.sum)
            yield family
        size = GaugeMetricFamily("pybrokerd_store_size_bytes", "bytes the store uses on disk",
                                 labels=["store"])
        size.add_metric([name], store.size())
        yield size
        failing = GaugeMetricFamily("pybrokerd_store_failing", "1 while the store cannot write",
                                    labels=["store"])
        failing.add_metric([name], 0 if getattr(store, "failure", None) is None else 1)
        yield failing


def render(service) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(service))
    return generate_latest(registry)
