"""Dramatiq middleware, one concern per module. The stack and its order are put together
by the composition root (:func:`jobplatform.root.middleware_stack`)."""
