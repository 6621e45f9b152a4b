"""Routing: the decision vocabulary, the assigner, the GrayRouter Runnable and its run plumbing."""
