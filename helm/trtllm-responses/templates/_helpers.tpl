{{/* Names, labels and shared fragments. */}}

{{- define "trtllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trtllm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component names stay under 63 characters with their suffix. */}}
{{- define "trtllm.inference.name" -}}
{{- printf "%s-inference" (include "trtllm.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}

{{- define "trtllm.gateway.name" -}}
{{- printf "%s-gateway" (include "trtllm.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "trtllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trtllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trtllm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trtllm.labels" -}}
helm.sh/chart: {{ include "trtllm.chart" . }}
{{ include "trtllm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trtllm-responses
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Usage: include "trtllm.componentLabels" (list . "inference") */}}
{{- define "trtllm.componentLabels" -}}
{{ include "trtllm.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "trtllm.componentSelector" -}}
{{ include "trtllm.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "trtllm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trtllm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Usage: include "trtllm.image" (list . .Values.inference.image) */}}
{{- define "trtllm.image" -}}
{{- $img := index . 1 -}}
{{- printf "%s:%s" $img.repository (default (index . 0).Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "trtllm.inference.gpus" -}}
{{- $v := .Values.inference -}}
{{- if not (kindIs "invalid" $v.gpusPerReplica) -}}{{ $v.gpusPerReplica }}
{{- else if eq $v.engine.kind "trtllm" -}}{{ $v.engine.tensorParallelSize }}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds = preStop sleep + stream drain + margin. Arg: a drain dict. */}}
{{- define "trtllm.terminationGrace" -}}
{{- add .preStopSleepSeconds .gracePeriodSeconds .marginSeconds -}}
{{- end -}}

{{/* The gRPC target the gateway dials: every inference pod via headless-Service DNS. */}}
{{- define "trtllm.gateway.serviceTarget" -}}
{{- if .Values.gateway.serviceTarget -}}
{{- .Values.gateway.serviceTarget -}}
{{- else -}}
{{- printf "dns:///%s.%s.svc.%s:%v" (include "trtllm.inference.name" .) .Release.Namespace .Values.gateway.clusterDomain .Values.inference.ports.grpc -}}
{{- end -}}
{{- end -}}

{{- define "trtllm.gateway.apiKeySecret" -}}
{{- default (printf "%s-api-keys" (include "trtllm.gateway.name" .)) .Values.gateway.auth.existingSecret -}}
{{- end -}}

{{- define "trtllm.gateway.reasoningKeySecret" -}}
{{- default (printf "%s-reasoning-key" (include "trtllm.gateway.name" .)) .Values.gateway.reasoningKey.existingSecret -}}
{{- end -}}

{{- define "trtllm.gateway.storeSecret" -}}
{{- default (printf "%s-store" (include "trtllm.gateway.name" .)) .Values.gateway.store.external.existingSecret -}}
{{- end -}}

{{- define "trtllm.gateway.sqliteClaim" -}}
{{- default (printf "%s-store" (include "trtllm.gateway.name" .)) .Values.gateway.store.sqlite.existingClaim -}}
{{- end -}}

{{/* Prometheus label selectors for each tier, as the ServiceMonitors label the series. */}}
{{- define "trtllm.inference.promSelector" -}}
namespace="{{ .Release.Namespace }}",service="{{ include "trtllm.inference.name" . }}"
{{- end -}}

{{- define "trtllm.gateway.promSelector" -}}
namespace="{{ .Release.Namespace }}",service="{{ include "trtllm.gateway.name" . }}"
{{- end -}}

{{/* --workers of the gateway: gateway.workers, else the container's CPU limit (its request
     without a limit) rounded down, at least 1: one process per CPU it may use. */}}
{{- define "trtllm.gateway.workers" -}}
{{- $gw := .Values.gateway -}}
{{- if $gw.workers -}}
{{- $gw.workers -}}
{{- else -}}
{{- $res := $gw.resources | default dict -}}
{{- $cpu := dig "limits" "cpu" (dig "requests" "cpu" "1" $res) $res | toString -}}
{{- $cpus := 0 -}}
{{- if regexMatch "^[0-9]+m$" $cpu -}}
{{- $cpus = div (atoi (trimSuffix "m" $cpu)) 1000 -}}
{{- else if regexMatch "^[0-9]+(\\.[0-9]+)?$" $cpu -}}
{{- $cpus = floor (float64 $cpu) | int -}}
{{- else -}}
{{- fail (printf "gateway.resources cpu %q: give CPUs (2, 1.5) or millicores (1500m), or set gateway.workers" $cpu) -}}
{{- end -}}
{{- max $cpus 1 -}}
{{- end -}}
{{- end -}}
