"""The five dashboards: overview, pools, supervisor, coordination, nats.

Each is a list of rows of :class:`~deploy.grafana.panels.Spec`; the heavy
per-task rates and latency histograms read the recording rules of
``deploy/prometheus/rules/recording.yml`` (``node_pool:…:rate1m``).
"""

from __future__ import annotations

from deploy.grafana.panels import NODE, POOL, Spec, board, quantile, rate

TASKS, POOLS, SUP, COORD, NATS = "task-metrics", "pool-metrics", "supervision-metrics", "coordination-metrics", "nats-metrics"
RP = 'node=~"$node", pool=~"$pool"'  # selector on the recording rules (they keep node and pool)


def _latency(q: float, by: str = "", metric: str = "foundation_task_duration_seconds") -> str:
    keep = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) (node_pool:{metric}_bucket:rate1m{{{RP}}}))"


def _wait(q: float, by: str = "") -> str:
    return _latency(q, by, "foundation_task_queue_wait_seconds")


def overview():
    return board("foundation-overview", "Foundation / Overview", "The whole cluster at a glance: throughput, latency, backlog, dead letters, restarts.", [
        ("Now", [
            Spec("Nodes ready", f"sum(foundation_node_ready{{{NODE}}})", SUP, "Nodes whose pools have all started.", kind="stat", width=4),
            Spec("Workers running", f'sum(foundation_workers_by_state{{{POOL}, state="running"}})', SUP, "Worker processes alive now.", kind="stat", width=4),
            Spec("Tasks/s", f"sum(node_pool:foundation_tasks_processed:rate1m{{{RP}}})", TASKS, "Tasks completed per second (result stored, acked).", unit="reqps", kind="stat", width=4),
            Spec("Backlog", f"sum(foundation_pool_backlog{{{POOL}}})", POOLS, "Tasks waiting in the pools' consumers.", kind="stat", width=4, warn=1000, crit=10000),
            Spec("DLQ depth", f"max(foundation_dlq_messages{{{POOL}}})", POOLS, "Dead letters kept in the DLQ stream.", kind="stat", width=4, warn=1, crit=100),
            Spec("Restarts (1h)", f"sum(increase(foundation_worker_restarts_total{{{POOL}}}[1h]))", SUP, "Worker restarts in the last hour, all causes.", kind="stat", width=4, warn=1, crit=10),
        ]),
        ("Flow", [
            Spec("Throughput by pool", f"sum by (pool) (node_pool:foundation_tasks_processed:rate1m{{{RP}}})", TASKS, "Tasks completed per second, per pool.", unit="reqps", legend="{{pool}}", width=8),
            Spec("Queue wait p99", _wait(0.99), TASKS, "99th percentile of the time from publish to the start of a task's first attempt.", unit="s", legend="p99", width=8, warn=10, crit=60),
            Spec("Handler latency p99", _latency(0.99), TASKS, "99th percentile of handler run time over the selected pools.", unit="s", legend="p99", width=8, warn=1, crit=10),
            Spec("Backlog by pool", f"sum by (pool) (foundation_pool_backlog{{{POOL}}})", POOLS, "Tasks waiting in each pool's consumer, not yet delivered.", legend="{{pool}}", width=8),
            Spec("Failures/s", f"sum by (pool) (node_pool:foundation_tasks_failed:rate1m{{{RP}}})", TASKS, "Handler exceptions per second (each attempt).", unit="reqps", legend="{{pool}}", width=8),
            Spec("Dead letters by reason", f"sum by (reason) (increase(foundation_tasks_dead_lettered_total{{{POOL}}}[$__rate_interval]))", TASKS, "Tasks sent to the DLQ: exhausted retries, invalid body, or a worker that died on every attempt.", legend="{{reason}}", width=8, stack=True),
            Spec("Restarts by cause", f"sum by (reason) (increase(foundation_worker_restarts_total{{{POOL}}}[$__rate_interval]))", SUP, "Worker restarts by cause (exit, signal, quota, recycle, sibling, requested).", legend="{{reason}}", width=12, stack=True),
            Spec("NATS JetStream up", f"min by (server) (foundation_nats_jetstream_up{{{NODE}}})", NATS, "1 while each NATS server reports JetStream healthy.", legend="{{server}}", width=12),
        ]),
    ])


def pools():
    return board("foundation-pools", "Foundation / Pools", "Per pool: flow, outcomes, latency, consumer state and agents.", [
        ("Flow", [
            Spec("Completed/s", f"sum by (pool) (node_pool:foundation_tasks_processed:rate1m{{{RP}}})", TASKS, "Tasks completed per second.", unit="reqps", legend="{{pool}}"),
            Spec("Failed/s", f"sum by (pool) (node_pool:foundation_tasks_failed:rate1m{{{RP}}})", TASKS, "Handler exceptions per second, each attempt counted.", unit="reqps", legend="{{pool}}"),
            Spec("Retried/s", rate("foundation_tasks_retried_total", POOL, "pool"), TASKS, "Tasks handed back for a redelivery after a failure.", unit="reqps", legend="{{pool}}"),
            Spec("Dead-lettered", f"sum by (pool, reason) (increase(foundation_tasks_dead_lettered_total{{{POOL}}}[$__rate_interval]))", TASKS, "Tasks sent to the DLQ, by reason.", legend="{{pool}} {{reason}}", stack=True),
            Spec("Deduplicated/s", rate("foundation_tasks_deduplicated_total", POOL, "pool"), TASKS, "Redelivered tasks found already applied: their result re-published, not run again.", unit="reqps", legend="{{pool}}"),
            Spec("Abandoned/s", rate("foundation_tasks_abandoned_total", POOL, "pool"), TASKS, "Tasks handed back without an outcome (the worker stopped or lost the delivery).", unit="reqps", legend="{{pool}}"),
            Spec("Redeliveries/s", rate("foundation_task_redeliveries_total", POOL, "pool"), TASKS, "Deliveries after a task's first: retries, and redeliveries after a lost worker.", unit="reqps", legend="{{pool}}"),
            Spec("Results stored/s", f"sum by (pool) (node_pool:foundation_results_stored:rate1m{{{RP}}})", TASKS, "Results stored on results.<pool>: completed, dead-lettered (ok=false) and re-published.", unit="reqps", legend="{{pool}}"),
        ]),
        ("Latency", [
            Spec("Queue wait p50", _wait(0.5, "pool"), TASKS, "Median time from publish to the start of a task's first attempt.", unit="s", legend="{{pool}}", width=6),
            Spec("Queue wait p99", _wait(0.99, "pool"), TASKS, "99th percentile of the time from publish to the start of a first attempt.", unit="s", legend="{{pool}}", width=6, warn=10, crit=60),
            Spec("Handler p50", _latency(0.5, "pool"), TASKS, "Median handler run time.", unit="s", legend="{{pool}}", width=6),
            Spec("Handler p99", _latency(0.99, "pool"), TASKS, "99th percentile of handler run time.", unit="s", legend="{{pool}}", width=6, warn=1, crit=10),
            Spec("In flight", f"sum by (pool) (foundation_tasks_in_flight{{{POOL}}})", TASKS, "Tasks being handled now.", legend="{{pool}}", width=24),
        ]),
        ("Consumer and streams", [
            Spec("Backlog", f"sum by (pool) (foundation_pool_backlog{{{POOL}}})", POOLS, "Tasks waiting, not yet delivered (consumer num_pending).", legend="{{pool}}", warn=1000, crit=10000),
            Spec("Ack pending", f"sum by (pool) (foundation_pool_ack_pending{{{POOL}}})", POOLS, "Delivered, not yet acknowledged (consumer num_ack_pending).", legend="{{pool}}"),
            Spec("Redelivered", f"sum by (pool) (foundation_pool_redelivered{{{POOL}}})", POOLS, "Tasks delivered more than once and still unacknowledged.", legend="{{pool}}", warn=1),
            Spec("DLQ depth", f"max by (pool) (foundation_dlq_messages{{{POOL}}})", POOLS, "Dead letters kept for the pool in the DLQ stream.", legend="{{pool}}", warn=1, crit=100),
            Spec("Results stored", f"max by (pool) (foundation_results_messages{{{POOL}}})", POOLS, "Results kept for the pool in the RESULTS stream.", legend="{{pool}}"),
            Spec("Waiting fetches", f"sum by (pool) (foundation_pool_waiting_fetches{{{POOL}}})", POOLS, "Pull requests of idle workers waiting for tasks.", legend="{{pool}}"),
        ]),
        ("Agents", [
            Spec("Agents by status", f"sum by (pool, status) (foundation_registry_agents{{{POOL}}})", COORD, "The pool's agents in the cluster registry, by status.", legend="{{pool}} {{status}}", width=12, stack=True),
            Spec("Workers by state", f"sum by (pool, state) (foundation_workers_by_state{{{POOL}}})", SUP, "Worker slots running, down (being restarted) or drained.", legend="{{pool}} {{state}}", width=12, stack=True),
        ]),
    ])


def supervisor():
    return board("foundation-supervisor", "Foundation / Supervisor", "The supervision trees: restarts, escalations, quotas, memory and CPU of the workers.", [
        ("Nodes", [
            Spec("Node ready", f"max by (node) (foundation_node_ready{{{NODE}}})", SUP, "1 once every pool has started; 0 while starting or stopping.", legend="{{node}}", kind="stat", width=8),
            Spec("Uptime", f"time() - max by (node) (foundation_node_start_time_seconds{{{NODE}}})", SUP, "Seconds since the node started.", unit="s", legend="{{node}}", kind="stat", width=8),
            Spec("Sampler errors", f"sum by (part) (increase(foundation_sampler_errors_total{{{NODE}}}[$__rate_interval]))", SUP, "Failed samples of consumers, streams, registry, variables or NATS monitoring.", legend="{{part}}", width=8, warn=1),
        ]),
        ("Restarts", [
            Spec("Restarts by pool and cause", f"sum by (pool, reason) (increase(foundation_worker_restarts_total{{{POOL}}}[$__rate_interval]))", SUP, "Worker restarts by cause.", legend="{{pool}} {{reason}}", stack=True),
            Spec("Escalations", f"sum by (supervisor) (increase(foundation_supervisor_escalations_total{{{NODE}}}[$__rate_interval]))", SUP, "Supervisors that exceeded their restart intensity and gave up.", legend="{{supervisor}}", warn=1, crit=1),
            Spec("Workers by state", f"sum by (pool, state) (foundation_workers_by_state{{{POOL}}})", SUP, "Worker slots running, down or drained.", legend="{{pool}} {{state}}", stack=True),
        ]),
        ("Quotas and resources", [
            Spec("Quota breaches", f"sum by (pool, kind) (increase(foundation_quota_breaches_total{{{POOL}}}[$__rate_interval]))", SUP, "Resource (rss, cpu, fds) and budget (rate, concurrency) breaches.", legend="{{pool}} {{kind}}", stack=True),
            Spec("Quota kills", f"sum by (pool, kind) (increase(foundation_quota_kills_total{{{POOL}}}[$__rate_interval]))", SUP, "Workers killed at once (RSS past 1.5x the limit).", legend="{{pool}} {{kind}}", warn=1, crit=1),
            Spec("Pool size", f"sum by (pool) (foundation_pool_size{{{POOL}}})", SUP, "Workers each pool should have (autoscaling changes it).", legend="{{pool}}"),
            Spec("RSS by pool", f"sum by (pool) (foundation_pool_rss_bytes{{{POOL}}})", SUP, "Resident memory of the largest worker of each pool.", unit="bytes", legend="{{pool}}"),
            Spec("CPU by pool", f"sum by (pool) (foundation_pool_cpu_percent{{{POOL}}})", SUP, "CPU use of the busiest worker of each pool.", unit="percent", legend="{{pool}}", warn=80, crit=95),
            Spec("Workers", f"sum by (pool) (foundation_workers{{{POOL}}})", SUP, "Worker processes the resource sampler sees.", legend="{{pool}}"),
        ]),
    ])


def coordination():
    rounds = f'sum by (protocol, outcome) (increase(foundation_coord_rounds_total{{{NODE}}}[$__rate_interval]))'
    return board("foundation-coordination", "Foundation / Coordination", "Registry, quota leases, votes, elections, locks, barriers, Byzantine agreement, auctions, shared variables.", [
        ("Registry and quotas", [
            Spec("Agents by status", f"sum by (status) (foundation_registry_agents{{{POOL}}})", COORD, "Agents registered by the selected nodes, by status.", legend="{{status}}", stack=True),
            Spec("Quota tokens granted/s", rate("foundation_quota_tokens_granted_total", POOL, "pool"), COORD, "Rate tokens handed out by each pool's quota leader.", unit="reqps", legend="{{pool}}"),
            Spec("Quota denials", f"sum by (pool, kind) (increase(foundation_quota_denials_total{{{POOL}}}[$__rate_interval]))", COORD, "Requests for tokens or slots that got less than asked.", legend="{{pool}} {{kind}}"),
            Spec("Quota leader changes", f"sum by (pool) (increase(foundation_quota_leader_changes_total{{{POOL}}}[$__rate_interval]))", COORD, "Quota service candidates taking the lead of a pool's budget.", legend="{{pool}}"),
        ]),
        ("Rounds", [
            Spec("Rounds by protocol and outcome", rounds, COORD, "Consensus, election, lock, barrier, Byzantine and Contract Net rounds finished.", legend="{{protocol}} {{outcome}}", width=12, stack=True),
            Spec("Round latency p99", "histogram_quantile(0.99, sum by (le, protocol) (node_protocol:foundation_coord_round_seconds_bucket:rate5m{node=~\"$node\"}))", COORD, "99th percentile of a round's duration, per protocol.", unit="s", legend="{{protocol}}", width=12),
            Spec("Votes", f'sum by (outcome) (increase(foundation_coord_rounds_total{{{NODE}, protocol="consensus"}}[$__rate_interval]))', COORD, "Consensus rounds: accepted, rejected, timed out.", legend="{{outcome}}"),
        ]),
        ("Byzantine agreement", [
            Spec("BFT decisions", f'sum(increase(foundation_coord_rounds_total{{{NODE}, protocol="bft", outcome="decided"}}[$__rate_interval]))', COORD, "Byzantine decisions reached by this cluster's members.", legend="decided"),
            Spec("BFT round changes", f"sum by (cause) (increase(foundation_bft_round_changes_total{{{NODE}}}[$__rate_interval]))", COORD, "Rounds started after the first: a leader timed out, or a later round was seen.", legend="{{cause}}", warn=1, crit=10),
            Spec("BFT rejected messages", f"sum by (reason) (increase(foundation_bft_rejected_total{{{NODE}}}[$__rate_interval]))", COORD, "Messages refused by reason (forged, replayed, equivocation…).", legend="{{reason}}", stack=True),
        ]),
        ("Market and variables", [
            Spec("Auctions cleared", f"sum by (kind) (increase(foundation_auctions_cleared_total{{{NODE}}}[$__rate_interval]))", COORD, "Auctions cleared, by kind (Contract Net awards included).", legend="{{kind}}", stack=True),
            Spec("Auction latency p99", quantile(0.99, "foundation_auction_seconds", NODE, "kind"), COORD, "99th percentile of the time to clear an auction.", unit="s", legend="{{kind}}"),
            Spec("Variable changes", "max by (variable) (foundation_variable_changes_total{node=~\"$node\"})", COORD, "Changes applied to each shared variable since it was declared.", legend="{{variable}}"),
            Spec("Variable values", "max by (variable) (foundation_variable_value{node=~\"$node\"})", COORD, "The applied value of each numeric shared variable.", legend="{{variable}}"),
        ]),
    ])


def nats():
    s = 'node=~"$node"'
    return board("foundation-nats", "Foundation / NATS", "NATS servers and JetStream, from their monitoring endpoints (/varz, /jsz).", [
        ("Health", [
            Spec("Servers up", f"max by (server) (foundation_nats_up{{{s}}})", NATS, "1 when the server's monitoring endpoint answers.", legend="{{server}}", kind="stat"),
            Spec("JetStream up", f"max by (server) (foundation_nats_jetstream_up{{{s}}})", NATS, "1 when the server reports JetStream healthy.", legend="{{server}}", kind="stat"),
            Spec("Slow consumers", f"max by (server) (foundation_nats_slow_consumers_total{{{s}}})", NATS, "Clients the server dropped messages for, since it started.", legend="{{server}}", kind="stat", warn=1),
        ]),
        ("Traffic", [
            Spec("Messages in/s", f"max by (server) (rate(foundation_nats_in_msgs_total{{{s}}}[$__rate_interval]))", NATS, "Messages received by each server per second.", unit="reqps", legend="{{server}}"),
            Spec("Messages out/s", f"max by (server) (rate(foundation_nats_out_msgs_total{{{s}}}[$__rate_interval]))", NATS, "Messages sent by each server per second.", unit="reqps", legend="{{server}}"),
            Spec("Bytes in/s", f"max by (server) (rate(foundation_nats_in_bytes_total{{{s}}}[$__rate_interval]))", NATS, "Bytes received per second.", unit="Bps", legend="{{server}}"),
            Spec("Connections", f"max by (server) (foundation_nats_connections{{{s}}})", NATS, "Client connections now.", legend="{{server}}"),
            Spec("Subscriptions", f"max by (server) (foundation_nats_subscriptions{{{s}}})", NATS, "Subscriptions now.", legend="{{server}}"),
            Spec("Server memory", f"max by (server) (foundation_nats_mem_bytes{{{s}}})", NATS, "Resident memory of each server.", unit="bytes", legend="{{server}}"),
        ]),
        ("JetStream", [
            Spec("Consumers", f"max by (server) (foundation_nats_jetstream_consumers{{{s}}})", NATS, "JetStream consumers on each server.", legend="{{server}}"),
            Spec("Streams", f"max by (server) (foundation_nats_jetstream_streams{{{s}}})", NATS, "Streams on each server.", legend="{{server}}"),
            Spec("Stored messages", f"max by (server) (foundation_nats_jetstream_messages{{{s}}})", NATS, "Messages stored by JetStream.", legend="{{server}}"),
            Spec("Storage used", f"max by (server) (foundation_nats_jetstream_storage_bytes{{{s}}})", NATS, "File storage used by JetStream.", unit="bytes", legend="{{server}}"),
            Spec("API requests/s", f"max by (server) (rate(foundation_nats_jetstream_api_requests_total{{{s}}}[$__rate_interval]))", NATS, "JetStream API requests per second.", unit="reqps", legend="{{server}}"),
            Spec("API errors/s", f"max by (server) (rate(foundation_nats_jetstream_api_errors_total{{{s}}}[$__rate_interval]))", NATS, "JetStream API requests that failed, per second.", unit="reqps", legend="{{server}}", warn=1),
        ]),
    ], pool=False)


DASHBOARDS = {"overview": overview, "pools": pools, "supervisor": supervisor, "coordination": coordination, "nats": nats}
