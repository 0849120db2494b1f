"""The canary: shift traffic to the challenger step by step, analyse it against the champion on live
traffic, promote or roll back (policy: include/config/canary.yaml)."""
