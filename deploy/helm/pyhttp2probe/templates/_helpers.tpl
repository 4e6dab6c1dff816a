{{/* The chart's name, at most 63 characters (a DNS label). */}}
{{- define "pyhttp2probe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, for object names: the release name alone when it already
contains the chart's name (`helm install pyhttp2probe ...` gives "pyhttp2probe").
*/}}
{{- define "pyhttp2probe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pyhttp2probe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "pyhttp2probe.labels" -}}
helm.sh/chart: {{ include "pyhttp2probe.chart" . }}
{{ include "pyhttp2probe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the agent's pods: never change them (selectors are immutable). */}}
{{- define "pyhttp2probe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pyhttp2probe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pyhttp2probe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pyhttp2probe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest; the tag defaults to the appVersion. */}}
{{- define "pyhttp2probe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the ConfigMap's config.yaml is mounted in the agent. */}}
{{- define "pyhttp2probe.configPath" -}}
/etc/pyhttp2probe/config.yaml
{{- end }}

{{/*
The agent's config file: .Values.config with `listen` defaulted to every address on
metricsPort, checked for what would make every pod fail (exit 2, or probes that never
answer) so the mistake shows at `helm install` instead of as a CrashLoopBackOff.
Null values and empty lists are left out: they mean "the agent's default".
*/}}
{{- define "pyhttp2probe.config" -}}
{{- $config := dict }}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "slice" $value) (empty $value))) }}
{{- $_ := set $config $key $value }}
{{- end }}
{{- end }}
{{- $port := int .Values.metricsPort }}
{{- $listen := default (printf "0.0.0.0:%d" $port) $config.listen }}
{{- if not (hasSuffix (printf ":%d" $port) $listen) }}
{{- fail (printf "config.listen %q must use metricsPort %d: the probes, the Service and the scrape annotations use that port" $listen $port) }}
{{- end }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]:" $listen) }}
{{- fail (printf "config.listen %q is a loopback address: the kubelet's probes and Prometheus could not reach it" $listen) }}
{{- end }}
{{- $_ := set $config "listen" $listen }}
{{- if not (or $config.all $config.exe $config.port $config.pid) }}
{{- fail "config selects no process: set config.all, config.exe, config.port or config.pid" }}
{{- end }}
{{- if and (eq (toString (default "auto" $config.link_style)) "perf_event") (not .Values.securityContext.privileged) (not (has "SYS_ADMIN" .Values.securityContext.extraCapabilities)) (not (has "CAP_SYS_ADMIN" .Values.securityContext.extraCapabilities)) }}
{{- fail "config.link_style perf_event needs CAP_SYS_ADMIN: set securityContext.privileged=true, or add SYS_ADMIN to securityContext.extraCapabilities" }}
{{- end }}
{{- toYaml $config }}
{{- end }}
