"""Network input: (x - 127.5) / 128 on BGR pixels, plus the FLM as 4th channel."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.models import inputs
from tests.helpers.flm_reference import flm_ref


def _batch(rng, b=2):
  image = rng.integers(0, 256, size=(b, 120, 120, 3), dtype=np.uint8)
  image[0, 0, 0] = [0, 255, 128]
  pts = rng.uniform(-5, 125, size=(b, 18, 2)).astype(np.float32)
  mask = (rng.uniform(size=(b, 18)) > 0.25).astype(np.float32)
  return image, pts, mask


def test_normalize_by_hand(rng):
  image, _, _ = _batch(rng)
  got = np.asarray(inputs.normalize_image(image))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, (image.astype(np.float64) - 127.5) / 128, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(got[0, 0, 0], [-127.5 / 128, 127.5 / 128, 0.5 / 128])
  # Channel order is kept (BGR in, BGR out: no swap).
  np.testing.assert_allclose(np.asarray(inputs.normalize_image(image.astype(np.float32))), got)


def test_model_input_four_channels(rng):
  image, pts, mask = _batch(rng)
  x = np.asarray(inputs.model_input(image, pts, mask, in_channels=4))
  assert x.shape == (2, 120, 120, 4) and x.dtype == np.float32
  np.testing.assert_allclose(x[..., :3], (image - 127.5) / 128, atol=1e-7)
  for b in range(2):
    np.testing.assert_array_equal(x[b, ..., 3], flm_ref(pts[b], mask[b]))
  x_nomask = np.asarray(inputs.model_input(image, pts, in_channels=4))
  np.testing.assert_array_equal(x_nomask[0, ..., 3], flm_ref(pts[0]))


def test_model_input_three_channels_and_errors(rng):
  image, pts, mask = _batch(rng)
  x = np.asarray(inputs.model_input(image, in_channels=3))
  assert x.shape == (2, 120, 120, 3)
  np.testing.assert_allclose(x, (image - 127.5) / 128, atol=1e-7)
  with pytest.raises(ValueError):
    inputs.model_input(image, in_channels=4)
  with pytest.raises(ValueError):
    inputs.model_input(image, pts, mask, in_channels=5)


def test_model_input_jit_vmap_grad(rng):
  image, pts, mask = _batch(rng)
  f = jax.jit(inputs.model_input, static_argnames='in_channels')
  want = np.concatenate([(image - 127.5) / 128, np.stack(
      [flm_ref(p, m) for p, m in zip(pts, mask)])[..., None]], -1).astype(np.float32)
  np.testing.assert_allclose(np.asarray(f(image, pts, mask, in_channels=4)), want, atol=1e-7)
  per = jax.jit(jax.vmap(lambda i, p, m: inputs.model_input(i[None], p[None], m[None])[0]))
  np.testing.assert_allclose(np.asarray(per(image, pts, mask)), want, atol=1e-7)
  # d/dimage of the colour channels is 1/128; the FLM passes no gradient to points.
  img_f = jnp.asarray(image, jnp.float32)
  gi, gp = jax.jit(jax.grad(lambda i, p: inputs.model_input(i, p, mask).sum(),
                            argnums=(0, 1)))(img_f, pts)
  np.testing.assert_allclose(np.asarray(gi), 1 / 128)
  np.testing.assert_array_equal(np.asarray(gp), 0)
