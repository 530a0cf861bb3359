"""Structural schemas for the custom resources the chart renders.

kubernetes-validate knows only the core Kubernetes API, so ServiceMonitor and PrometheusRule
(Prometheus Operator, monitoring.coreos.com/v1) and ScaledObject (KEDA, keda.sh/v1alpha1) are
checked against these hand-written subsets of their CRDs: apiVersion/kind, the required
fields and the types and enums of the fields we set. They reject unknown fields only where the
real CRD does (spec of each kind), which catches a misspelt key in a template.
"""
from __future__ import annotations

import jsonschema

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "matchExpressions": {"type": "array"}},
}


def _object(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version}, "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"], "properties": {
                "name": _NAME, "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "spec": spec,
        },
    }


SERVICE_MONITOR = _object("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
    "properties": {
        "selector": _LABEL_SELECTOR,
        "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
            "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "jobLabel": {"type": "string"},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "anyOf": [{"required": ["port"]},
                                                                        {"required": ["targetPort"]}],
            "properties": {"port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]},
                           "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
                           "interval": _DURATION, "scrapeTimeout": _DURATION,
                           "honorLabels": {"type": "boolean"}}}},
    },
})

_RULE = {
    "type": "object", "required": ["expr"], "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION, "keep_firing_for": _DURATION,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
PROMETHEUS_RULE = _object("monitoring.coreos.com/v1", "PrometheusRule", {
    "type": "object", "required": ["groups"], "additionalProperties": False,
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "rules"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                       "rules": {"type": "array", "minItems": 1, "items": _RULE}}}}},
})

_POLICY = {"type": "object", "required": ["type", "value", "periodSeconds"], "additionalProperties": False,
           "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                          "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}}}
_RULES = {"type": "object", "additionalProperties": False, "properties": {
    "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
    "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
    "policies": {"type": "array", "items": _POLICY}}}
SCALED_OBJECT = _object("keda.sh/v1alpha1", "ScaledObject", {
    "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
    "properties": {
        "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME}},
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "advanced": {"type": "object", "additionalProperties": False, "properties": {
            "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False, "properties": {
                "name": {"type": "string"},
                "behavior": {"type": "object", "additionalProperties": False,
                             "properties": {"scaleUp": _RULES, "scaleDown": _RULES}}}}}},
        "triggers": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
            "properties": {
                "type": {"type": "string"}, "name": {"type": "string"},
                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "authenticationRef": {"type": "object", "required": ["name"]}},
            "if": {"properties": {"type": {"const": "prometheus"}}},
            "then": {"properties": {"metadata": {"required": ["serverAddress", "query", "threshold"]}}}}},
    },
})

SCHEMAS: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
}


def validate_crd_object(doc: dict) -> None:
    """Raises KeyError for a kind we have no schema for, jsonschema.ValidationError if invalid."""
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
