"""Synthetic behaviour generator: a data source, a believable online shop whose every probability is known.

Customers carry latent traits (activity, intent, price sensitivity, value, browsing style, complaint
proneness, an optional activity decline). Each day, for every customer at once (numpy, one loop over days):

1. an alive customer may churn (absorbing: no more orders) with a daily hazard that rises with recent and
   unresolved complaints, long gaps since the last order, declining activity and low engagement;
2. a hidden purchase-intent stage moves (idle -> interested -> product -> cart, or back to idle);
3. the stage sets the chance of a web session and how it looks (page depth, product and cart pages) and
   the chance that the session ends in an order; some customers also order offline (store/phone);
4. an order may schedule a complaint (channel, category, severity, resolution delay, some never resolved)
   that opens a few days later and raises the churn hazard from then on.

Because every future hazard is fixed by today's state along the path "no order yet", P(no order in the
next 60 days) and P(an order in the next 14 days) are computed exactly by a forward recursion over the
four intent stages, not estimated. See docs/generator.md for the mechanism, the parameters
(configs/generate.yaml) and the stated base-rate ranges.

Modules, by job: ``config`` (the generate.yaml schema), ``traits`` (latent customer traits), ``simulate``
(the day-by-day behaviour), ``truth`` (ground truth and drivers), ``write`` (the raw exports, atomically),
``generator`` (one run). Callers use ``generate`` and ``load_generator_config``.
"""

from __future__ import annotations

from pipelines.synthetic.config import GeneratorConfig, load_generator_config
from pipelines.synthetic.generator import DEFAULT_END, GenerateReport, generate

__all__ = ["DEFAULT_END", "GenerateReport", "GeneratorConfig", "generate", "load_generator_config"]
