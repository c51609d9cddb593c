"""A labgrid lab: its coordinator as the directory and queue of our exporters (``pip install 'jumpstarter[labgrid]'``).

``coordinator``: a client session with labgrid's coordinator (places, reservations, acquire/release);
``board``: what a place's ``JumpstarterExporter`` resource says, checked; ``publish``: an exporter of ours
announcing itself to the coordinator. Nothing here is imported unless a lab is used.
"""
