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
{{- define "tokend.tlsDir" -}}/etc/tokend/tls{{- end -}}
{{- /* The pod's own service-account token and the cluster CA, projected for federation.kubernetes. */}}
{{- define "tokend.kubeApiDir" -}}/var/run/secrets/tokend/kubernetes{{- end -}}
{{- define "tokend.tlsClientCADir" -}}/etc/tokend/tls-client-ca{{- end -}}
{{- define "tokend.redisTlsDir" -}}/etc/tokend/redis-tls{{- end -}}

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

{{/*
Checksum of the chart-created Secrets' inputs: pods roll when they change. Byte-for-byte the same
input as before admin.tokenHash and loginApp.tokenHash existed (each joins only when set), so upgrading
the chart alone does not roll the pods.
*/}}
{{- define "tokend.secretsChecksum" -}}
{{- $in := dict "signing" .Values.signing "clients" .Values.clients.items "redis" .Values.redis.password -}}
{{- if .Values.admin.tokenHash -}}{{- $_ := set $in "admin" .Values.admin.tokenHash -}}{{- end -}}
{{- if .Values.loginApp.tokenHash -}}{{- $_ := set $in "loginApp" .Values.loginApp.tokenHash -}}{{- end -}}
{{- $in | toJson | sha256sum -}}
{{- end -}}

{{/* ----------------------------------- redis TLS files -------------------------------------- */}}

{{/* "true" when redis.tls mounts a Secret: [store] tls_ca_file / tls_cert_file / tls_key_file point into it. */}}
{{- define "tokend.redisTls.enabled" -}}
{{- if .Values.redis.tls.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* ----------------------------------- admin listener --------------------------------------- */}}

{{/* "true" when the admin API is on: [admin] token_hash comes from a Secret (TOKEND_ADMIN_TOKEN_HASH). */}}
{{- define "tokend.admin.tokenEnabled" -}}
{{- if and .Values.admin.enabled (or .Values.admin.existingSecret .Values.admin.tokenHash) -}}true{{- end -}}
{{- end -}}

{{- define "tokend.admin.secretName" -}}
{{- if .Values.admin.existingSecret -}}
{{- .Values.admin.existingSecret -}}
{{- else -}}
{{- printf "%s-admin" (include "tokend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.admin.secretKey" -}}
{{- if .Values.admin.existingSecret -}}{{ .Values.admin.existingSecretKey }}{{- else -}}token-hash{{- end -}}
{{- end -}}

{{/* ----------------------------------- login app ------------------------------------------- */}}

{{/*
"true" when the login app's secret hash comes from a Secret: [authorization] login_app_token_hash, passed as
TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH.
*/}}
{{- define "tokend.loginApp.enabled" -}}
{{- if or .Values.loginApp.existingSecret .Values.loginApp.tokenHash -}}true{{- end -}}
{{- end -}}

{{- define "tokend.loginApp.secretName" -}}
{{- if .Values.loginApp.existingSecret -}}
{{- .Values.loginApp.existingSecret -}}
{{- else -}}
{{- printf "%s-login-app" (include "tokend.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.loginApp.secretKey" -}}
{{- if .Values.loginApp.existingSecret -}}{{ .Values.loginApp.existingSecretKey }}{{- else -}}token-hash{{- end -}}
{{- end -}}

{{/* The Service Prometheus scrapes: /metrics lives on the admin listener when there is one. */}}
{{- define "tokend.metricsServiceName" -}}
{{- if .Values.admin.enabled -}}
{{- printf "%s-admin" (include "tokend.fullname" .) -}}
{{- else -}}
{{- include "tokend.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* ----------------------------------- server TLS ------------------------------------------- */}}

{{/* Secret holding the client CA (mTLS): its own, or the server certificate's. */}}
{{- define "tokend.tls.clientCASecret" -}}
{{- .Values.tls.clientCA.existingSecret | default .Values.tls.existingSecret -}}
{{- end -}}

{{/* "true" when the client CA comes from a Secret other than the server certificate's (a second mount). */}}
{{/* Client certificates required on the TLS listeners (the kubelet, which has none, cannot pass the
     handshake): a client CA or self-signed certificates, unless config.tls.client_auth is "optional". */}}
{{- define "tokend.tls.clientCertRequired" -}}
{{- $t := .Values.config.tls | default dict -}}
{{- if and .Values.tls.enabled (or .Values.tls.clientCA.enabled $t.self_signed_client_certs) (ne ($t.client_auth | default "required") "optional") -}}true{{- end -}}
{{- end -}}

{{- define "tokend.tls.clientCASeparate" -}}
{{- if and .Values.tls.enabled .Values.tls.clientCA.enabled (ne (include "tokend.tls.clientCASecret" .) .Values.tls.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* ----------------------------------- config ----------------------------------------------- */}}

{{- define "tokend.issuer" -}}
{{- if .Values.config.issuer -}}
{{- .Values.config.issuer -}}
{{- else -}}
{{- printf "%s://%s.%s.svc.%s:%d" (ternary "https" "http" .Values.tls.enabled) (include "tokend.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.service.ports.http) -}}
{{- end -}}
{{- end -}}

{{- define "tokend.listen" -}}
{{- printf "%s:%d" .host (int .port) -}}
{{- end -}}

{{/* [server] shutdown_grace_secs and drain_delay_secs as tokend applies them (its defaults when unset). */}}
{{- define "tokend.shutdownGrace" -}}
{{- $v := .Values.config.server.shutdown_grace_secs -}}
{{- if kindIs "invalid" $v -}}20{{- else -}}{{- int $v -}}{{- end -}}
{{- end -}}
{{- define "tokend.drainDelay" -}}
{{- int (.Values.config.server.drain_delay_secs | default 0) -}}
{{- end -}}

{{/* After SIGTERM tokend waits drain_delay_secs, then drains for up to shutdown_grace_secs: 10 s margin on top. */}}
{{- define "tokend.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add (int (include "tokend.drainDelay" .)) (int (include "tokend.shutdownGrace" .)) 10 -}}
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

{{/* "key = value" lines for one map, keys sorted; null values (unset: tokend's default) are left out. */}}
{{- define "tokend.toml.pairs" -}}
{{- $lines := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $v := get $ $k -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $lines = append $lines (printf "%s = %s" $k (include "tokend.toml.value" $v)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* A whole [section] from config.<name>, preceded by a blank line; nothing when every key is unset. */}}
{{- define "tokend.toml.section" -}}
{{- $pairs := include "tokend.toml.pairs" (.values | default dict) -}}
{{- if $pairs }}

[{{ .name }}]
{{ $pairs }}
{{- end -}}
{{- end -}}

{{/* [[trusted_issuers]]: this cluster's service-account tokens (federation.kubernetes), then
     federation.trustedIssuers as given. Arrays of tables go last-but-sections: every [[...]] header
     opens its own table, so the sections after it are unaffected. */}}
{{- define "tokend.toml.trustedIssuers" -}}
{{- $k := .Values.federation.kubernetes }}
{{- if $k.enabled }}

[[trusted_issuers]]
issuer = {{ $k.issuer | toJson }}
jwks_uri = {{ $k.jwksUri | toJson }}
bearer_token_file = {{ printf "%s/token" (include "tokend.kubeApiDir" .) | toJson }}
ca_file = {{ printf "%s/ca.crt" (include "tokend.kubeApiDir" .) | toJson }}
{{- with $k.audiences }}
audiences = {{ include "tokend.toml.value" . }}
{{- end }}
{{- with $k.maxLifetimeSecs }}
max_lifetime_secs = {{ . }}
{{- end }}
{{- with $k.minRefetchSecs }}
min_refetch_secs = {{ . }}
{{- end }}
{{- end }}
{{- range .Values.federation.trustedIssuers }}

[[trusted_issuers]]
{{ include "tokend.toml.pairs" . }}
{{- end }}
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
{{- if include "tokend.redisTls.enabled" . }}
{{- $t := .Values.redis.tls }}
{{- $dir := include "tokend.redisTlsDir" . }}
{{- with $t.caKey }}
tls_ca_file = {{ printf "%s/%s" $dir . | toJson }}
{{- end }}
{{- if $t.certKey }}
tls_cert_file = {{ printf "%s/%s" $dir $t.certKey | toJson }}
tls_key_file = {{ printf "%s/%s" $dir $t.keyKey | toJson }}
{{- end }}
{{- end }}

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
{{- $authz := include "tokend.toml.pairs" (.Values.config.authorization | default dict) }}
{{- if or $authz (include "tokend.loginApp.enabled" .) }}

[authorization]
{{- with $authz }}
{{ . }}
{{- end }}
{{- if include "tokend.loginApp.enabled" . }}
# login_app_token_hash: from env TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH (Secret {{ include "tokend.loginApp.secretName" . }}), never in this file
{{- end }}
{{- end }}
{{- include "tokend.toml.section" (dict "name" "rate_limit" "values" .Values.config.rate_limit) }}
{{- include "tokend.toml.section" (dict "name" "auth_throttle" "values" .Values.config.auth_throttle) }}
{{- include "tokend.toml.section" (dict "name" "discovery" "values" .Values.config.discovery) }}
{{- include "tokend.toml.section" (dict "name" "revocation_feed" "values" .Values.config.revocation_feed) }}
{{- include "tokend.toml.section" (dict "name" "client_assertion" "values" .Values.config.client_assertion) }}
{{- include "tokend.toml.section" (dict "name" "telemetry" "values" .Values.config.telemetry) }}
{{- include "tokend.toml.trustedIssuers" . }}
{{- if .Values.admin.enabled }}

[admin]
listen = {{ include "tokend.listen" (dict "host" .Values.listenHost "port" .Values.containerPorts.admin) | toJson }}
{{- if include "tokend.admin.tokenEnabled" . }}
# token_hash: from env TOKEND_ADMIN_TOKEN_HASH (Secret {{ include "tokend.admin.secretName" . }}), never in this file
{{- else }}
# no token_hash (admin.tokenHash / admin.existingSecret): /metrics only, no admin API
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}

[tls]
cert_file = {{ printf "%s/%s" (include "tokend.tlsDir" .) .Values.tls.certKey | toJson }}
key_file = {{ printf "%s/%s" (include "tokend.tlsDir" .) .Values.tls.keyKey | toJson }}
{{- if .Values.tls.clientCA.enabled }}
client_ca_file = {{ printf "%s/%s" (ternary (include "tokend.tlsClientCADir" .) (include "tokend.tlsDir" .) (eq (include "tokend.tls.clientCASeparate" .) "true")) .Values.tls.clientCA.key | toJson }}
{{- end }}
{{- with include "tokend.toml.pairs" (.Values.config.tls | default dict) }}
{{ . }}
{{- end }}
{{- else }}
{{- include "tokend.toml.section" (dict "name" "tls" "values" .Values.config.tls) }}
{{- end }}
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
{{- $grace := int (include "tokend.shutdownGrace" .) -}}
{{- $drain := int (include "tokend.drainDelay" .) -}}
{{- if and .Values.terminationGracePeriodSeconds (le (int .Values.terminationGracePeriodSeconds) (add $grace $drain)) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.server.drain_delay_secs + shutdown_grace_secs (%d + %d)" (int .Values.terminationGracePeriodSeconds) $drain $grace) -}}
{{- end -}}
{{- /* [auth_throttle] and [authorization]: the checks tokend makes, before anything reaches the cluster. */ -}}
{{- $at := .Values.config.auth_throttle | default dict -}}
{{- $atOn := ternary true $at.enabled (kindIs "invalid" $at.enabled) -}}
{{- if and $atOn (not (kindIs "invalid" $at.threshold)) (eq (int $at.threshold) 0) -}}
{{- fail "config.auth_throttle.threshold must be positive while auth_throttle is enabled" -}}
{{- end -}}
{{- $base := ternary 1 $at.base_secs (kindIs "invalid" $at.base_secs) -}}
{{- $max := ternary 60 $at.max_secs (kindIs "invalid" $at.max_secs) -}}
{{- if lt (int $max) (int $base) -}}
{{- fail (printf "config.auth_throttle.max_secs (%d) must be at least base_secs (%d)" (int $max) (int $base)) -}}
{{- end -}}
{{- if not (dig "login_url" "" (.Values.config.authorization | default dict)) -}}
{{- range .Values.clients.items -}}
{{- if has "authorization_code" (.grant_types | default list) -}}
{{- fail (printf "clients.items: %q has the authorization_code grant: set config.authorization.login_url" .client_id) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* the login app: [authorization] login_app_token_hash comes from a Secret, and tokend requires it with login_url */ -}}
{{- if and .Values.loginApp.existingSecret .Values.loginApp.tokenHash -}}
{{- fail "loginApp: set either loginApp.existingSecret or loginApp.tokenHash, not both" -}}
{{- end -}}
{{- if and (dig "login_url" "" (.Values.config.authorization | default dict)) (not (include "tokend.loginApp.enabled" .)) -}}
{{- fail "config.authorization.login_url needs the login app's bearer secret hash ([authorization] login_app_token_hash; tokend refuses to start without it): set loginApp.tokenHash (`printf %s \"$LOGIN_APP_SECRET\" | tokend hash-secret`) or loginApp.existingSecret" -}}
{{- end -}}
{{- /* admin listener */ -}}
{{- if .Values.admin.enabled -}}
{{- if has (int .Values.containerPorts.admin) (list (int .Values.containerPorts.grpc) (int .Values.containerPorts.http)) -}}
{{- fail "containerPorts.admin must differ from containerPorts.grpc and containerPorts.http" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.admin.existingSecret .Values.admin.tokenHash -}}
{{- fail "admin: set either admin.existingSecret or admin.tokenHash, not both" -}}
{{- end -}}
{{- if and (or .Values.admin.existingSecret .Values.admin.tokenHash) (not .Values.admin.enabled) -}}
{{- fail "admin.existingSecret / admin.tokenHash need admin.enabled: true (the admin API lives on the admin listener)" -}}
{{- end -}}
{{- /* server TLS */ -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}
{{- fail "tls.enabled needs tls.existingSecret (a Secret with the certificate chain and key, e.g. from cert-manager)" -}}
{{- end -}}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.enabled) -}}
{{- fail "tls.clientCA.enabled (mTLS) needs tls.enabled" -}}
{{- end -}}
{{- /* TLS to Redis */ -}}
{{- if include "tokend.redisTls.enabled" . -}}
{{- if not (regexMatch "^rediss(\\+cluster)?://" $url) -}}
{{- fail (printf "redis.tls.existingSecret needs a rediss:// or rediss+cluster:// config.store.url, not %q" $url) -}}
{{- end -}}
{{- $rt := .Values.redis.tls -}}
{{- if ne (empty $rt.certKey) (empty $rt.keyKey) -}}
{{- fail "redis.tls.certKey and redis.tls.keyKey go together (a client certificate and its key)" -}}
{{- end -}}
{{- if and (not $rt.caKey) (not $rt.certKey) -}}
{{- fail "redis.tls.existingSecret is set but names no file: set redis.tls.caKey and/or redis.tls.certKey + keyKey" -}}
{{- end -}}
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
