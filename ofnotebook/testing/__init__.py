"""Helpers for trying functions out without a cluster: throwaway local brokers."""

from ofnotebook.testing.kafka import TansuBroker, local_kafka, start_tansu, tansu_path

__all__ = ["TansuBroker", "local_kafka", "start_tansu", "tansu_path"]
