"""Helpers shared by the kernel tests: how big the arrays a traced function materialises get."""

import jax


def largest_intermediate(fn, *args) -> int:
  """Element count of the largest array any equation of fn's jaxpr produces.

  Nested jaxprs (scan, custom_vjp, jit) are walked; Pallas kernel bodies are not, since their
  values live in registers, not device memory.
  """

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      yield from (v.aval.size for v in eqn.outvars if hasattr(v.aval, "size"))
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", param)
        if hasattr(inner, "eqns") and eqn.primitive.name != "pallas_call":
          yield from walk(inner)

  return max(walk(jax.make_jaxpr(fn)(*args).jaxpr))
