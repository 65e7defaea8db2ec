"""``hosted-engine demo``: the scripted end-to-end scenario on the lab.

It starts the lab (a separate ``hosted-engine lab up`` process: HTTPS, Redfish and IPMI BMCs),
installs the CRDs and applies ``examples/lab`` with real ``kubectl``, starts the real operator
(``hosted-engine run`` with peering, in its own process), then plays a scenario step by step
and prints what happens with timestamps. It exits 0 only when every enabled step passed.

- :mod:`hosted_engine.demo.output`: the plain-text reporter (colours only on a terminal).
- :mod:`hosted_engine.demo.processes`: the lab, operator and kubectl processes.
- :mod:`hosted_engine.demo.watchdog`: runs the operator and stops it when the lab goes away
  (so ``hosted-engine lab down`` after ``demo --keep`` stops everything).
- :mod:`hosted_engine.demo.scenario`: the steps (:data:`~hosted_engine.demo.scenario.STEPS`,
  with :data:`~hosted_engine.demo.scenario.ENABLED_STEPS`) and :func:`run_demo`.

Nothing of the operator imports this package (import contract).
"""
