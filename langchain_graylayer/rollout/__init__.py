"""Rollout: plan state, the controller that judges and moves ratios, rollback cleanup."""
