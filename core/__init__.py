"""What every layer uses: typed configs with checked overrides (:mod:`core.config`), logging
(:mod:`core.logs`), atomic writes (:mod:`core.checkpoint`), devices and data parallelism
(:mod:`core.distributed`) and the one training loop (:mod:`core.training`). It imports no other
package of the toolkit."""
