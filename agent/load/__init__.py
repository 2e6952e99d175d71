"""Load testing: many meetings of cheap bots on one machine (a process per core) or on a Ray
cluster, with per-phase join latencies, failures, media quality and a report.

    connvo-agent load --meetings 50 --participants 4 --media none --report out/
"""
