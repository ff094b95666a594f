"""Templates ``yukimizu init`` writes: a commented config and the registry files.

A package (not a folder under ``config/``) so the files ship with an installed
yukimizu, not only with a checkout.
"""
