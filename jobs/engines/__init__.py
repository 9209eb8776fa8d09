"""Engines that run an approved plan and return its released result: the TEE and MPC."""
