"""Demonstration datasets: one in-memory format, readers/writers for the formats we meet, windows.

Everything is read from a LOCAL path; nothing here downloads.

- :class:`Episode` / :class:`DemoDataset` are the in-memory format every loader returns
  (:mod:`otpr.data.dataset`, with the errors and :func:`~otpr.data.dataset.validate_episode`).
- robomimic hdf5 (:func:`read_robomimic_hdf5`, :func:`write_robomimic_hdf5`;
  :mod:`otpr.data.robomimic`): the layout of robomimic's ``SequenceDataset``
  (``data/demo_i/{obs/<key>, next_obs/<key>, actions, rewards, dones}``,
  ``data.attrs["env_args"]`` as JSON, ``data.attrs["total"]``, per-demo ``num_samples``,
  ``mask/<filter>`` as lists of demo names in bytes).
- D4RL hdf5 (:func:`read_d4rl_hdf5`; :mod:`otpr.data.d4rl`): flat
  ``observations/actions/rewards/terminals/timeouts``.
- Minari (:func:`read_minari`; :mod:`otpr.data.minari`): a dataset stored under a local
  ``MINARI_DATASETS_PATH``.
- CALVIN (:func:`read_calvin_episodes`; :mod:`otpr.data.calvin`): ``episode_XXXXXXX.npz`` steps.

A malformed file raises :class:`DatasetError` (a ``ValueError``) with one line naming the file,
the key and what was expected, e.g.
``demos.hdf5: data/demo_3/actions: expected 120 rows (as obs), got 119``.

:func:`make_windows` cuts (observation-history, action-chunk) training pairs with the
diffusion_policy convention; :func:`split_episodes` splits per episode (both in
:mod:`otpr.data.windows`, with :func:`window_indices` and :func:`dataset_stats`).
"""

from otpr.data.calvin import read_calvin_episodes
from otpr.data.d4rl import read_d4rl_hdf5
from otpr.data.dataset import DatasetError, DatasetNotFoundError, DemoDataset, Episode
from otpr.data.minari import read_minari
from otpr.data.robomimic import read_robomimic_hdf5, write_robomimic_hdf5
from otpr.data.windows import dataset_stats, make_windows, split_episodes, window_indices

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DemoDataset",
    "Episode",
    "dataset_stats",
    "make_windows",
    "read_calvin_episodes",
    "read_d4rl_hdf5",
    "read_minari",
    "read_robomimic_hdf5",
    "split_episodes",
    "window_indices",
    "write_robomimic_hdf5",
]
