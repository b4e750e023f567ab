"""Test doubles for OpenFlow switches: a pure model of one switch's controller-role rules
(`fake_switch`) and an asyncio fleet of emulated OpenFlow 1.3 switches built on it (`fleet`).

Importing this package imports no framework; `fleet` imports Ryu / os-ken (through `compat`)
when first used. docs/fleet.md says what is emulated and how it was checked against Open vSwitch.
"""
