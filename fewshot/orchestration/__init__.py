"""The only package that talks to Ray: Ray Train runs (``train``), sweeps (``sweep``), transfer studies
(``transfer``), Tune studies (``tune``, planned by the Ray-free ``study``) and the object-store dataset sharing
they use (``shared``). What the sweeps compare is Ray-free too (``studies``)."""
