{{/*
The chart's name, shortened to fit a label value.
*/}}
{{- define "spool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name, with the chart name
appended unless the release name already contains it ("spool" stays
"spool", "prod" becomes "prod-spool").
*/}}
{{- define "spool.fullname" -}}
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

{{/*
Selector labels: never change after install (a Deployment's selector is
immutable), so nothing version-like goes in.
*/}}
{{- define "spool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "spool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spool
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest when given, else the tag (the appVersion by
default). Never "latest".
*/}}
{{- define "spool.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "spool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding api-keys, api-key, signing-keys and database-url.
*/}}
{{- define "spool.secretName" -}}
{{- if .Values.secret.create }}
{{- include "spool.fullname" . }}
{{- else }}
{{- required "secret.existingSecret: name a Secret when secret.create is false" .Values.secret.existingSecret }}
{{- end }}
{{- end }}

{{/*
Where the database URL is read from: the CloudNativePG application Secret
(key uri) or Spool's own Secret (key database-url).
*/}}
{{- define "spool.databaseSecretName" -}}
{{- if .Values.database.cloudnativepg.enabled }}
{{- printf "%s-db-app" (include "spool.fullname" .) }}
{{- else }}
{{- include "spool.secretName" . }}
{{- end }}
{{- end }}

{{- define "spool.databaseSecretKey" -}}
{{- if .Values.database.cloudnativepg.enabled }}uri{{ else }}database-url{{ end }}
{{- end }}

{{/*
The restricted Pod Security Standard, for every container.
*/}}
{{- define "spool.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "spool.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A Spool pod template. Arguments (a dict): root (the top context),
component ("server" or "worker"), role ("all", "api" or "worker"),
resources, readinessPort ("http" or "admin").
*/}}
{{- define "spool.podTemplate" -}}
{{- $root := .root -}}
{{- $selector := include "spool.selectorLabels" $root -}}
metadata:
  labels:
    {{- include "spool.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    # A changed setting or secret rolls the pods.
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if $root.Values.secret.create }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "spool.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # More than SPOOL_DRAIN_DELAY + SPOOL_SHUTDOWN_TIMEOUT: Spool finishes its
  # own shutdown and is never killed with deliveries in hand.
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "spool.podSecurityContext" $root | nindent 4 }}
  {{- if or $root.Values.topologySpread.zone $root.Values.topologySpread.hostname }}
  topologySpreadConstraints:
    {{- if $root.Values.topologySpread.zone }}
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: {{ $root.Values.topologySpread.zoneWhenUnsatisfiable }}
      nodeTaintsPolicy: Honor
      labelSelector:
        matchLabels:
          {{- $selector | nindent 10 }}
          app.kubernetes.io/component: {{ .component }}
      matchLabelKeys:
        - pod-template-hash
    {{- end }}
    {{- if $root.Values.topologySpread.hostname }}
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- $selector | nindent 10 }}
          app.kubernetes.io/component: {{ .component }}
      matchLabelKeys:
        - pod-template-hash
    {{- end }}
  {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $root.Values.migrate.enabled }}
  initContainers:
    # The schema first: idempotent and serialised by an advisory lock, so
    # every pod may run it.
    - name: migrate
      image: {{ include "spool.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["migrate"]
      env:
        - name: SPOOL_DATABASE_URL_FILE
          value: /run/secrets/spool/database-url
      resources:
        {{- toYaml $root.Values.migrate.resources | nindent 8 }}
      securityContext:
        {{- include "spool.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: database-url
          mountPath: /run/secrets/spool
          readOnly: true
  {{- end }}
  containers:
    - name: spool
      image: {{ include "spool.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["serve", "--role={{ .role }}"]
      ports:
        {{- if ne .role "worker" }}
        - name: http
          containerPort: 8000
          protocol: TCP
        {{- end }}
        - name: admin
          containerPort: 9090
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "spool.fullname" $root }}
      env:
        - name: SPOOL_DATABASE_URL_FILE
          value: /run/secrets/spool/database-url
        {{- if ne .role "worker" }}
        - name: SPOOL_API_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ include "spool.secretName" $root }}
              key: api-keys
        {{- end }}
        {{- if ne .role "api" }}
        - name: SPOOL_SIGNING_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ include "spool.secretName" $root }}
              key: signing-keys
              optional: true
        {{- end }}
        - name: GOMAXPROCS
          valueFrom:
            resourceFieldRef:
              containerName: spool
              resource: limits.cpu
              divisor: "1"
        - name: GOMEMLIMIT
          valueFrom:
            resourceFieldRef:
              containerName: spool
              resource: limits.memory
              divisor: "1"
        {{- if $root.Values.schedules }}
        - name: SPOOL_SCHEDULES_FILE
          value: /etc/spool/schedules/schedules.yaml
        {{- end }}
      # Startup: up at all; liveness: still answering (never the database);
      # readiness: able to serve (store reachable, not shutting down).
      startupProbe:
        httpGet:
          path: /livez
          port: admin
        periodSeconds: 2
        timeoutSeconds: 2
        failureThreshold: 30
      livenessProbe:
        httpGet:
          path: /livez
          port: admin
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: {{ .readinessPort }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 3
        successThreshold: 1
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- include "spool.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: database-url
          mountPath: /run/secrets/spool
          readOnly: true
        {{- if $root.Values.schedules }}
        # A directory, not a subPath: the kubelet updates it in place.
        - name: schedules
          mountPath: /etc/spool/schedules
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    - name: database-url
      secret:
        secretName: {{ include "spool.databaseSecretName" $root }}
        defaultMode: 0440
        items:
          - key: {{ include "spool.databaseSecretKey" $root }}
            path: database-url
    {{- if $root.Values.schedules }}
    - name: schedules
      configMap:
        name: {{ include "spool.fullname" $root }}-schedules
        defaultMode: 0444
    {{- end }}
{{- end }}
