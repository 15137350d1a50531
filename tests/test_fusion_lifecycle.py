"""fusion_node as a managed node: configure checks the model, activate starts input and
inference, deactivate stops them and releases the runtime, and a bad model fails configure
without killing the process."""

from pathlib import Path

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from fusion_nodes.nodes.fusion_node import ManagedFusionNode
from tests.models.make_models import write_tiny_model

pytestmark = pytest.mark.ros


def _node(model: Path) -> ManagedFusionNode:
    return ManagedFusionNode(parameter_overrides=[
        Parameter('model', value=str(model)), Parameter('enable_overlay', value=False)])


def _topics_subscribed(node) -> set[str]:
    return {sub.topic_name for sub in node.subscriptions}


def test_transitions_start_and_stop_input_and_inference(rclpy_session, tmp_path):
    node = _node(write_tiny_model(tmp_path))
    try:
        assert node.backend is None and not _topics_subscribed(node)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.backend is not None and not node.backend.is_active
        assert not any(t.endswith('camera/features') for t in _topics_subscribed(node))
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.backend.is_active
        assert any(t.endswith('camera/features') for t in _topics_subscribed(node))
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not node.backend.is_active
        assert not any(t.endswith('camera/features') for t in _topics_subscribed(node))
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.backend is None
        # And round again: a cleaned-up node configures and activates as new.
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.backend.is_active
    finally:
        node.destroy_node()


def test_bad_model_fails_configure_and_the_node_stays_up(rclpy_session, tmp_path):
    node = _node(tmp_path / 'missing.json')
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.backend is None
        assert not any(t.endswith('camera/features') for t in _topics_subscribed(node))
    finally:
        node.destroy_node()


def test_diagnostics_name_the_runtime_that_actually_runs(rclpy_session, tmp_path):
    node = _node(write_tiny_model(tmp_path))
    sent = []
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node.diagnostics_pub.publish = sent.append
        node._publish_diagnostics()
        own = [status for status in sent[0].status if status.name == 'fusion_nodes: fusion_node']
        values = {kv.key: kv.value for kv in own[0].values}
        assert values['backend'] == node.backend.describe()
        assert values['backend'].startswith('onnxruntime (') and 'ExecutionProvider' in \
            values['backend']
    finally:
        node.destroy_node()
