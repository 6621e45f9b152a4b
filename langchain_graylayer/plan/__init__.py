"""Plans: bucketing, user profiles and A-RFM scoring, tag rules, layers, gates."""
