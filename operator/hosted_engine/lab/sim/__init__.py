"""The lab's Kubernetes-side simulators: nodes and their kubelets, the node lifecycle
controller, the scheduler, the Job and PV controllers, and the :class:`~.lab.Lab` that composes
them with the API server, the BMCs and the KubeVirt simulators.

Every simulator is an ordinary client of the lab API server; every duration comes from
:class:`~hosted_engine.lab.sim.timings.LabTimings`.
"""
