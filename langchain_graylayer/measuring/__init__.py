"""Measuring: run labels, Prometheus metrics, callback handlers, completion, tracing, the
tool-call journal, feedback, and the evidence each routed run adds to the store."""
