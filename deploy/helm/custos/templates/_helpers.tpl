{{/* Names and labels shared by every template. */}}
{{- define "custos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "custos.fullname" -}}
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

{{- define "custos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "custos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "custos.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "custos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: custos
{{- end -}}

{{- define "custos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "custos.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "custos.secretName" -}}
{{- default (printf "%s-keys" (include "custos.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "custos.esSecretName" -}}
{{- default (printf "%s-elasticsearch" (include "custos.fullname" .)) .Values.elasticsearch.existingSecret -}}
{{- end -}}

{{/*
The sidecar's custos.yaml: what the Pod layout fixes (ports, upstream on localhost, state dir, mounted
files), then the chart's feature values, then .Values.sidecar.config over everything. Loaded by
sidecar.config.load_config in tests/deploy so the chart cannot drift from the code.
*/}}
{{- define "custos.sidecarConfig" -}}
{{- $cfg := dict
  "server" (dict "host" "0.0.0.0" "port" (int .Values.sidecar.port))
  "upstream" (dict "url" (printf "http://127.0.0.1:%d" (int .Values.inference.port)))
  "state" (dict "dir" "/var/lib/custos")
-}}
{{- $cfg = mustMergeOverwrite $cfg (include "custos.featureConfig" . | fromYaml) -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy .Values.sidecar.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Feature sections derived from chart values (model, Elasticsearch, keys, policies, receivers). */}}
{{- define "custos.featureConfig" -}}
{{- $v := .Values -}}
{{- $keys := or $v.secrets.existingSecret $v.secrets.jwtPublicKey -}}
{{- $rbacPolicy := ternary (hasKey $v.policies "rbac.yaml") (ne (.Files.Get "files/policies/rbac.yaml") "") (gt (len $v.policies) 0) -}}
{{- with $v.sidecar.tls }}{{ if .secretName }}
server:
  tls:
    enabled: true
    cert_file: /etc/custos/tls/tls.crt
    key_file: /etc/custos/tls/tls.key
    min_version: {{ .minVersion | quote }}
    {{- if .clientCAKey }}
    client_ca_file: /etc/custos/tls/{{ .clientCAKey }}
    {{- end }}
{{- end }}{{ end }}
auth:
  # Tokens come from your identity provider; the local dev key is for laptops only.
  dev_key: false
  {{- if $keys }}
  keys:
    - path: /etc/custos/secrets/jwt-public.pem
  {{- end }}
{{- if $rbacPolicy }}
rbac:
  policy_file: /etc/custos/policies/rbac.yaml
{{- end }}
{{- if or $v.secrets.existingSecret $v.secrets.auditSigningKey $v.elasticsearch.enabled }}
audit:
  {{- if or $v.secrets.existingSecret $v.secrets.auditSigningKey }}
  signing_key: /etc/custos/secrets/audit-signing.key
  {{- end }}
  {{- if $v.elasticsearch.enabled }}
  elasticsearch:
    hosts: [{{ $v.elasticsearch.url | quote }}]
    index: {{ $v.elasticsearch.index | quote }}
    {{- if $v.elasticsearch.caSecret }}
    ca_certs: /etc/custos/es-ca/ca.crt
    {{- end }}
  {{- end }}
{{- end }}
metrics:
  # The served model always gets its own label value.
  models: [{{ $v.model.servedName | quote }}]
gpu:
  enabled: {{ and (eq $v.inference.engine "vllm") (ne $v.gpu.telemetry "off") }}
  names: {{ ternary "custos" $v.gpu.telemetry (eq $v.gpu.telemetry "off") }}
{{- with $v.alerting }}
{{- if or .receivers .route .externalUrl }}
alerting:
  {{- with .externalUrl }}
  external_url: {{ . | quote }}
  {{- end }}
  {{- with .receivers }}
  receivers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .route }}
  route:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "custos.inferenceImage" -}}
{{- $img := ternary .Values.inference.image .Values.inference.cpuImage (eq .Values.inference.engine "vllm") -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}

{{/* Secret-backed environment of the sidecar. */}}
{{- define "custos.sidecarSecretEnv" -}}
{{- if .Values.elasticsearch.enabled }}
# Credentials reach the config through CUSTOS_<SECTION>__<FIELD> overrides, never through the ConfigMap.
- name: CUSTOS_AUDIT__ELASTICSEARCH__USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "custos.esSecretName" . }}, key: ES_USERNAME}
- name: CUSTOS_AUDIT__ELASTICSEARCH__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "custos.esSecretName" . }}, key: ES_PASSWORD}
{{- end }}
{{- if and (eq .Values.inference.engine "vllm") (ne .Values.gpu.telemetry "off") }}
# NVML in the sidecar: the NVIDIA runtime mounts the driver's utility libraries (no GPU is allocated).
- name: NVIDIA_VISIBLE_DEVICES
  value: all
- name: NVIDIA_DRIVER_CAPABILITIES
  value: utility
{{- end }}
{{- end -}}

{{/* The ServiceMonitor's scheme with sidecar.tls: HTTPS, verified with the TLS Secret's ca.crt. */}}
{{- define "custos.serviceMonitorTLS" -}}
{{- with .Values.sidecar.tls }}{{ if .secretName -}}
scheme: https
tlsConfig:
  ca: {secret: {name: {{ .secretName | quote }}, key: ca.crt}}
  serverName: {{ include "custos.fullname" $ }}
{{- end }}{{ end }}
{{- end -}}
