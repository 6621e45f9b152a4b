"""Judging: the read model a judge consumes, statistics, the article's QoS, and judge() (pure)."""
