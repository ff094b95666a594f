"""Simulators: storms, households, leaks and plow fleets that drive yukimizu without hardware.

A scenario file (:mod:`simulators.scenario`) is resolved against the device registry
into a world of true states (:mod:`simulators.world`); devices observe it and encode
what they would publish (:mod:`simulators.stream`, :mod:`simulators.formats`); the
truth is written for scoring (:mod:`simulators.truth`); :mod:`simulators.run`
publishes over MQTT or writes a file, and :mod:`simulators.cli` is the command.
"""

from simulators.formats import WIRE_FORMATS, WireFormat
from simulators.run import Playback, Summary, publish_scenario, write_jsonl
from simulators.scenario import Scenario, ScenarioError, load_scenario
from simulators.stream import SimMessage, Simulation, TopicPrefixes
from simulators.truth import write_truth
from simulators.world import World, build_world

__all__ = [
    "WIRE_FORMATS",
    "Playback",
    "Scenario",
    "ScenarioError",
    "SimMessage",
    "Simulation",
    "Summary",
    "TopicPrefixes",
    "WireFormat",
    "World",
    "build_world",
    "load_scenario",
    "publish_scenario",
    "write_jsonl",
    "write_truth",
]
