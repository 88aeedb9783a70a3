"""Critics: action-value estimators whose -Q is the OT transport cost, and V(s) for PPO."""

from critics.base import Critic
from critics.iql import IQLCritic, expectile_loss
from critics.value import StateValue

__all__ = ["Critic", "IQLCritic", "StateValue", "expectile_loss"]
