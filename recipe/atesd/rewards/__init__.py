"""Reward functions pluggable into verl's `reward.custom_reward_function`."""
