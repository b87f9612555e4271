{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to 63 characters (DNS label limit). */}}
{{- define "tokend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
Truncated to 52 characters so that "-headless" and similar suffixes still fit in 63.
*/}}
{{- define "tokend.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tokend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "tokend.labels" -}}
helm.sh/chart: {{ include "tokend.chart" . }}
{{ include "tokend.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokend
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "tokend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tokend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tokend.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tokend.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------------
Paths inside the pod. The check script (scripts/chart_check.py) rewrites these prefixes to run
tokend against the rendered files, so keep every mount under /etc/tokend/.
--------------------------------------------------------------------------------------------- */}}
{{- define "tokend.configDir" -}}/etc/tokend/config{{- end -}}
{{- define "tokend.keysDir" -}}/etc/tokend/keys{{- end -}}
{{- define "tokend.clientsDir" -}}/etc/tokend/clients{{- end -}}

{{/* ----------------------------------- signing keys ----------------------------------------- */}}

{{/* existing | values | generate | ephemeral */}}
{{- define "tokend.signing.mode" -}}
{{- if .Values.signing.existingSecret -}}existing
{{- else if .Values.signing.key -}}values
{{- else if .Values.signing.autoGenerate -}}generate
{{- else -}}ephemeral
{{- end -}}
{{- end -}}

{{- define "tokend.signing.secretName" -}}
{{- if .Values.signing.existingSecret -}}
{{- .Values.signing.existingSecret -}}
{{- else -}}
{{- printf "%s-signing" (include "tokend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* File name of the current key inside the keys mount. */}}
{{- define "tokend.signing.keyName" -}}
{{- if .Values.signing.existingSecret -}}{{ .Values.signing.existingSecretKey }}{{- else -}}signing.pem{{- end -}}
{{- end -}}

{{/* File names of the previous keys inside the keys mount, as a JSON list. */}}
{{- define "tokend.signing.previousKeyNames" -}}
{{- $names := list -}}
{{- if .Values.signing.existingSecret -}}
{{- $names = .Values.signing.existingSecretPreviousKeys -}}
{{- else -}}
{{- range $i, $_ := .Values.signing.previousKeys -}}
{{- $names = append $names (printf "previous-%d.pem" $i) -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* ----------------------------------- clients ---------------------------------------------- */}}

{{- define "tokend.clients.enabled" -}}
{{- if or .Values.clients.existingSecret .Values.clients.items -}}true{{- end -}}
{{- end -}}

{{- define "tokend.clients.secretName" -}}
{{- if .Values.clients.existingSecret -}}
{{- .Values.clients.existingSecret -}}
{{- else -}}
{{- printf "%s-clients" (include "tokend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.clients.keyName" -}}
{{- if .Values.clients.existingSecret -}}{{ .Values.clients.existingSecretKey }}{{- else -}}clients.toml{{- end -}}
{{- end -}}

{{/* ----------------------------------- redis password --------------------------------------- */}}

{{- define "tokend.redis.passwordEnabled" -}}
{{- if or .Values.redis.existingSecret .Values.redis.password -}}true{{- end -}}
{{- end -}}

{{- define "tokend.redis.secretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else -}}
{{- printf "%s-redis" (include "tokend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.redis.secretKey" -}}
{{- if .Values.redis.existingSecret -}}{{ .Values.redis.existingSecretKey }}{{- else -}}redis-password{{- end -}}
{{- end -}}

{{/* ----------------------------------- config ----------------------------------------------- */}}

{{- define "tokend.issuer" -}}
{{- if .Values.config.issuer -}}
{{- .Values.config.issuer -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "tokend.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.service.ports.http) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.listen" -}}
{{- printf "%s:%d" .host (int .port) -}}
{{- end -}}

{{- define "tokend.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add (int (.Values.config.server.shutdown_grace_secs | default 20)) 10 -}}
{{- end -}}
{{- end -}}

{{/*
A TOML value from a values node: strings (JSON escapes are valid TOML basic-string escapes),
booleans, integers (whole floats print without an exponent), floats, arrays and inline tables.
*/}}
{{- define "tokend.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 $v) (float64 (int64 $v)) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v -}}{{- $items = append $items (include "tokend.toml.value" .) -}}{{- end -}}
{{- printf "[%s]" (join ", " $items) -}}
{{- else if kindIs "map" $v -}}
{{- $items := list -}}
{{- range $k := keys $v | sortAlpha -}}
{{- $items = append $items (printf "%s = %s" (toJson $k) (include "tokend.toml.value" (get $v $k))) -}}
{{- end -}}
{{- if $items -}}{{- printf "{ %s }" (join ", " $items) -}}{{- else -}}{}{{- end -}}
{{- else -}}
{{- fail (printf "tokend: cannot render %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* "key = value" lines for one map, keys sorted. */}}
{{- define "tokend.toml.pairs" -}}
{{- $lines := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $lines = append $lines (printf "%s = %s" $k (include "tokend.toml.value" (get $ $k))) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* tokend.toml: only keys tokend knows (the schema rejects others); paths and listeners set by the chart. */}}
{{- define "tokend.config.toml" -}}
# Rendered by the tokend Helm chart ({{ include "tokend.chart" . }}) from values: do not edit.
issuer = {{ include "tokend.issuer" . | toJson }}
{{- if include "tokend.clients.enabled" . }}
clients_file = {{ printf "%s/%s" (include "tokend.clientsDir" .) (include "tokend.clients.keyName" .) | toJson }}
{{- end }}

[http]
listen = {{ include "tokend.listen" (dict "host" .Values.listenHost "port" .Values.containerPorts.http) | toJson }}
{{- with .Values.config.http }}
{{ include "tokend.toml.pairs" . }}
{{- end }}

[grpc]
listen = {{ include "tokend.listen" (dict "host" .Values.listenHost "port" .Values.containerPorts.grpc) | toJson }}

[store]
{{ include "tokend.toml.pairs" .Values.config.store }}

[tokens]
{{ include "tokend.toml.pairs" .Values.config.tokens }}

[signing]
{{ include "tokend.toml.pairs" .Values.config.signing }}
{{- if ne (include "tokend.signing.mode" .) "ephemeral" }}
key_file = {{ printf "%s/%s" (include "tokend.keysDir" .) (include "tokend.signing.keyName" .) | toJson }}
{{- $prev := list }}
{{- range (include "tokend.signing.previousKeyNames" . | fromJsonArray) }}
{{- $prev = append $prev (printf "%s/%s" (include "tokend.keysDir" $) .) }}
{{- end }}
{{- if $prev }}
previous_key_files = {{ include "tokend.toml.value" $prev }}
{{- end }}
{{- end }}

[log]
{{ include "tokend.toml.pairs" .Values.config.log }}

[server]
{{ include "tokend.toml.pairs" .Values.config.server }}
{{ end -}}

{{/* ----------------------------------- checks ----------------------------------------------- */}}
{{- define "tokend.validate" -}}
{{- $url := .Values.config.store.url | default "" -}}
{{- if regexMatch "^[a-z+]+://[^/@]*:[^/@]*@" $url -}}
{{- fail "config.store.url must not contain a password (it would land in the ConfigMap): set redis.password or redis.existingSecret" -}}
{{- end -}}
{{- $multi := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}
{{- if and (hasPrefix "memory://" $url) $multi -}}
{{- fail "config.store.url memory:// keeps tokens inside one pod: use Redis, or replicaCount 1 with autoscaling.enabled false" -}}
{{- end -}}
{{- $mode := include "tokend.signing.mode" . -}}
{{- if and (eq $mode "ephemeral") $multi -}}
{{- fail "signing: no key (signing.existingSecret, signing.key or signing.autoGenerate): an ephemeral key differs per pod, so it needs replicaCount 1 and autoscaling.enabled false" -}}
{{- end -}}
{{- if and (eq $mode "generate") (not (has .Values.config.signing.algorithm (list "RS256" "EdDSA"))) -}}
{{- fail (printf "signing.autoGenerate can make RS256 and EdDSA keys, not %s (Helm writes EC keys in SEC1, tokend reads PKCS#8): create one with `tokend keygen --alg %s` and use signing.existingSecret" .Values.config.signing.algorithm .Values.config.signing.algorithm) -}}
{{- end -}}
{{- if and .Values.signing.existingSecret (or .Values.signing.key .Values.signing.previousKeys) -}}
{{- fail "signing: set either signing.existingSecret or signing.key/previousKeys, not both" -}}
{{- end -}}
{{- if and (not .Values.signing.existingSecret) .Values.signing.existingSecretPreviousKeys -}}
{{- fail "signing.existingSecretPreviousKeys needs signing.existingSecret" -}}
{{- end -}}
{{- if and .Values.clients.existingSecret .Values.clients.items -}}
{{- fail "clients: set either clients.existingSecret or clients.items, not both" -}}
{{- end -}}
{{- if and .Values.redis.existingSecret .Values.redis.password -}}
{{- fail "redis: set either redis.existingSecret or redis.password, not both" -}}
{{- end -}}
{{- $grace := int (.Values.config.server.shutdown_grace_secs | default 20) -}}
{{- if and .Values.terminationGracePeriodSeconds (le (int .Values.terminationGracePeriodSeconds) $grace) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.server.shutdown_grace_secs (%d)" (int .Values.terminationGracePeriodSeconds) $grace) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if eq (int .Values.containerPorts.grpc) (int .Values.containerPorts.http) -}}
{{- fail "containerPorts.grpc and containerPorts.http must differ" -}}
{{- end -}}
{{- $ids := list -}}
{{- range .Values.clients.items -}}
{{- if has .client_id $ids -}}{{- fail (printf "clients.items: duplicate client_id %q" .client_id) -}}{{- end -}}
{{- $ids = append $ids .client_id -}}
{{- end -}}
{{- end -}}
