"""Critics: action-value estimators whose -Q is the OT transport cost."""

from critics.base import Critic
from critics.iql import IQLCritic, expectile_loss

__all__ = ["Critic", "IQLCritic", "expectile_loss"]
