"""Measuring: run labels, Prometheus metrics, in-process windows, callback handlers, completion,
tracing, the tool-call journal, feedback, and the metric sources that fill the read model."""
