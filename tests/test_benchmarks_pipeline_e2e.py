"""benchmarks.pipeline_e2e's regressor-alone timing: interleaving and bookkeeping (no model)."""
import time

import numpy as np

from benchmarks import pipeline_e2e


class _Fake:
  """A predictor that records its calls and takes a known time per crop."""

  def __init__(self, name, log, s_per_crop):
    self.name, self.log, self.s = name, log, s_per_crop

  def predict_crops(self, crops):
    self.log.append((self.name, len(crops)))
    time.sleep(self.s * len(crops))


def test_time_regressor_rotates_the_order_and_times_each_batch():
  log = []
  contenders = {k: (None, _Fake(k, log, s)) for k, s in (('a', 1e-3), ('b', 4e-3))}
  crops = np.zeros((8, 120, 120, 3), np.uint8)
  out = pipeline_e2e.time_regressor(contenders, crops, rounds=3, calls=(2, 1))
  # Per round and contender: batch 1 warmed + 2 calls, batch 8 warmed + 1 call.
  per = [(1,)] * 3 + [(8,)] * 2
  assert len(log) == 3 * 2 * len(per)
  firsts = [log[r * 2 * len(per)][0] for r in range(3)]
  assert firsts == ['a', 'b', 'a']  # the order rotates from round to round
  for k, s in (('a', 1e-3), ('b', 4e-3)):
    assert set(out[k]) == {'batch1', 'batch8'}
    for b in (1, 8):
      x = out[k][f'batch{b}']
      assert len(x['rounds_ms']) == 3
      assert x['ms_per_call'] >= 1e3 * s * b  # sleeps at least that long
      np.testing.assert_allclose(x['crops_per_s'], 1e3 * b / x['ms_per_call'])
  # b is 4x slower per crop: at batch 8 the sleep dominates the call's overhead.
  assert out['b']['batch8']['ms_per_call'] > 1.5 * out['a']['batch8']['ms_per_call']
